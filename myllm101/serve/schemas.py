"""The request and response bodies of the OpenAI-compatible API (pydantic models).

The request models hold what we implement; other fields OpenAI clients send (``user``,
``frequency_penalty``, ...) are ignored. They declare the responses in the OpenAPI schema too
(``/openapi.json``), which tests/test_serve_schema.py checks against the server's behaviour.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Request):
    include_usage: bool = False


class _Sampling(_Request):
    model: str = Field(min_length=1, description="a model id from /v1/models")
    max_tokens: int | None = Field(
        None, ge=1, description="new tokens at most (default: what fits the context, the cap)"
    )
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stop: str | list[str] | None = Field(None, description="up to 4 stop strings")
    stream: bool = False
    stream_options: StreamOptions | None = Field(
        None, description="include_usage: a last chunk with the token counts (choices empty)"
    )
    n: int = Field(1, ge=1, le=1, description="choices per request (only 1)")
    ignore_eos: bool = Field(
        False,
        description="keep generating past the model's end tokens, up to max_tokens (vLLM's "
        "extension, for benchmarks: every request then has the same length)",
    )

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        return tuple(s for s in stops if s)


class CompletionRequest(_Sampling):
    prompt: str | list[str] = Field(description="the text to continue (a list of one string)")
    max_tokens: int | None = Field(
        None, ge=1, description="new tokens at most (default 16, or the cap if lower)"
    )


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)


class EmbeddingRequest(_Request):
    model: str = Field(min_length=1)
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"


class RagRequest(_Request):
    question: str = Field(min_length=1)
    k: int = Field(4, ge=1, le=50)
    method: Literal["bm25", "dense", "hybrid", "weighted", "rerank"] = Field(
        "weighted", description="the retriever (rag/retrieve.py; weighted retrieves best)"
    )
    max_tokens: int = Field(128, ge=1)


# ---- responses --------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "myllm101"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: str | None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None


class ChatResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class RagSource(BaseModel):
    path: str
    text: str
    score: float


class RagResponse(BaseModel):
    answer: str
    sources: list[RagSource]


class Health(BaseModel):
    status: Literal["ok", "shutting_down"]
    model: str
    active: int
    waiting: int
