#!/bin/sh
# The test setup that needs the system's packages (Debian's apt-get, as root):
#   - Chromium and ChromeDriver, for the attention-page test in headless Chromium;
#   - a CJK font (fonts-noto-cjk), for attention PNGs of Chinese text (bertforge attention
#     "这是一个好产品" --out FILE.png draws its tick labels with it).
# Never fails: without a piece, the tests that need it are skipped and say why.
# matplotlib caches its font list; bertforge rescans the system's fonts when that list has no CJK
# font, so the cache needs no rebuilding after the font is installed.
have_browser() {
    command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1
}
have_cjk_font() {
    command -v fc-list >/dev/null 2>&1 && [ -n "$(fc-list :lang=zh family 2>/dev/null | head -n 1)" ]
}
if have_browser && have_cjk_font; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
    have_browser || echo "install chromium and chromium-driver (needs apt-get as root), or the browser test is skipped"
    have_cjk_font || echo "install a CJK font, e.g. fonts-noto-cjk (needs apt-get as root), or the Chinese attention PNG test is skipped"
    exit 0
fi
apt-get update -qq >/dev/null 2>&1
if ! have_browser && ! apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; then
    echo "could not install chromium: the browser test will be skipped"
fi
if ! have_cjk_font && ! apt-get install -y -qq fonts-noto-cjk >/dev/null 2>&1; then
    echo "could not install fonts-noto-cjk: the Chinese attention PNG test will be skipped"
fi
exit 0
