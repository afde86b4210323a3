"""`bertforge info`: the presets with their sizes, the registered fine-tuning tasks, and the versions of
what bertforge runs on."""

from __future__ import annotations

from dataclasses import dataclass

from bertforge.cli.command import Command, option


@dataclass
class InfoOptions:
    vocab_size: int = option(30522, help="vocabulary size used for the parameter counts")


def run(options: InfoOptions) -> int:
    import platform

    from bertforge.version import __version__
    from bertforge.config import PRESETS, BertConfig, count_parameters

    print(f"bertforge {__version__} on Python {platform.python_version()}")
    for name in ("torch", "tokenizers", "safetensors", "numpy"):
        try:
            module = __import__(name)
            print(f"  {name:12s} {module.__version__}")
        except ImportError:
            print(f"  {name:12s} not installed")
    print()
    print(f"{'preset':8s} {'layers':>6s} {'hidden':>6s} {'heads':>5s} {'ffn':>6s} {'parameters':>12s}")
    for name, sizes in PRESETS.items():
        config = BertConfig.from_preset(name, vocab_size=options.vocab_size)
        print(f"{name:8s} {sizes['num_hidden_layers']:6d} {sizes['hidden_size']:6d} "
              f"{sizes['num_attention_heads']:5d} {sizes['intermediate_size']:6d} "
              f"{count_parameters(config) / 1e6:11.1f}M")
    from bertforge.tasks.registry import all_tasks

    print()
    print(f"{'task':12s} {'head':32s} settings")
    for task in all_tasks():
        print(f"{task.name:12s} {task.model_class.architecture:32s} {task.settings_class.__name__}: {task.help}")
    return 0


COMMANDS = [Command(("info",), InfoOptions, run, "show the presets, their parameter counts, the tasks and versions",
                    examples=["bertforge info", "bertforge info --vocab-size 21128"])]
