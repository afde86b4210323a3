"""`ServeSettings`: where the server listens, its limits and its micro-batching. Kept apart from
the FastAPI app (nothing heavy imported here) so the CLI can build its options cheaply."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bertforge.errors import BertforgeError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"
    """Loopback by default: exposing the server is a deliberate choice (`--host 0.0.0.0`)."""
    port: int = 8000
    backend: Literal["torch", "onnx"] = "torch"
    onnx_file: str | None = None
    """The ONNX graph for the onnx backend (default MODEL/model.onnx)."""
    device: str = "cpu"
    threads: int | None = None
    """Intra-op threads of PyTorch / onnxruntime (None: their default)."""
    micro_batching: bool = True
    batch_size: int = 32
    """Most inputs one model call takes when requests are merged."""
    max_wait_ms: float = 5.0
    """How long the oldest waiting request may wait for others to join its batch."""
    max_items: int = 64
    """Most inputs (texts, questions) in one request; more gives 413."""
    max_text_chars: int = 10_000
    """Longest text (or context) in characters; longer gives 413."""
    max_body_bytes: int = 1_000_000
    """Largest request body; larger gives 413 before it is parsed."""
    max_attention_tokens: int = 64
    """Tokens shown by /v1/attention (the maps grow with the square of it)."""
    graceful_timeout: float = 30.0
    """Seconds in-flight requests get to finish after SIGTERM/SIGINT."""
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise BertforgeError(f"port must be in 0..65535, got {self.port}")
        for name in ("batch_size", "max_items", "max_text_chars", "max_body_bytes", "max_attention_tokens"):
            if getattr(self, name) <= 0:
                raise BertforgeError(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.max_wait_ms < 0 or self.graceful_timeout < 0:
            raise BertforgeError("max-wait-ms and graceful-timeout must be >= 0")
        if self.max_attention_tokens < 3:
            raise BertforgeError("max-attention-tokens must be at least 3 ([CLS], a token, [SEP])")
