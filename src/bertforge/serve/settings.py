"""`ServeSettings`: where the server listens, its limits and its micro-batching. Kept apart from
the FastAPI app (nothing heavy imported here) so the CLI can build its options cheaply; the
`bertforge serve` options are this class itself (its field docstrings are the `--help`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bertforge.errors import BertforgeError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"
    """Address to bind; loopback by default: exposing the server is a deliberate choice (`--host 0.0.0.0`)."""
    port: int = 8000
    """Port (0: any free port)."""
    backend: Literal["auto", "torch", "onnx"] = "auto"
    """PyTorch, or onnxruntime on MODEL/model.onnx; auto: onnx for a `bertforge quantize` directory, else torch."""
    onnx_file: str | None = None
    """The ONNX graph for --backend onnx (default MODEL/model.onnx)."""
    device: str = "cpu"
    """cpu, cuda, cuda:1 ... (torch backend; auto: CUDA when available)."""
    threads: int | None = None
    """Intra-op threads of PyTorch / onnxruntime (default: the library's)."""
    micro_batching: bool = True
    """Merge requests that arrive together into one forward pass."""
    batch_size: int = 32
    """Most inputs one merged forward pass takes."""
    max_wait_ms: float = 5.0
    """How long the oldest waiting request may wait for others to join its batch."""
    max_items: int = 64
    """Most inputs (texts, questions) in one request (more: 413)."""
    max_text_chars: int = 10_000
    """Longest text (or context) in characters (longer: 413)."""
    max_request_tokens: int = 16_384
    """Most WordPiece tokens in all the texts of one request, special tokens not counted (more: 413);
    counted before the model runs, so one request cannot hold the worker for long."""
    max_body_bytes: int = 1_000_000
    """Largest request body in bytes (larger: 413, before it is parsed)."""
    max_attention_tokens: int = 64
    """Tokens shown by /v1/attention and /attention (the maps grow with the square of it)."""
    graceful_timeout: float = 30.0
    """Seconds in-flight requests get to finish after SIGTERM/SIGINT."""
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    """uvicorn's log level."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise BertforgeError(f"port must be in 0..65535, got {self.port}")
        for name in ("batch_size", "max_items", "max_text_chars", "max_request_tokens", "max_body_bytes",
                     "max_attention_tokens"):
            if getattr(self, name) <= 0:
                raise BertforgeError(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.max_wait_ms < 0 or self.graceful_timeout < 0:
            raise BertforgeError("max-wait-ms and graceful-timeout must be >= 0")
        if self.max_attention_tokens < 3:
            raise BertforgeError("max-attention-tokens must be at least 3 ([CLS], a token, [SEP])")
