#!/bin/sh
# Debian's Chromium and ChromeDriver, for the attention-page test in headless Chromium.
# Never fails: without them that one test is skipped and says why.
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    if ! (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1; then
        echo "could not install chromium: the browser test will be skipped"
    fi
else
    echo "install chromium and chromium-driver (needs apt-get as root), or the browser test is skipped"
fi
exit 0
