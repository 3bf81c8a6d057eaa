"""Azure OpenAI (issue 11): deployment URLs, the api-key header, OpenAI's bodies."""

from __future__ import annotations

import json

import trio_llm
from trio_llm import Request


def test_a_request_goes_to_its_deployment_with_an_api_key() -> None:
    """The URL names the deployment (the request's model, else the default) and api-version;
    the key goes in api-key, never as a bearer token."""
    azure = trio_llm.AzureOpenAI(
        "https://res.openai.azure.com/", "gpt4o-prod", api_version="2025-01-01"
    )
    sent = azure.build_request(Request.from_prompt("hi"), "secret-key")
    assert sent.url == (
        "https://res.openai.azure.com/openai/deployments/gpt4o-prod/chat/completions"
        "?api-version=2025-01-01"
    )
    assert sent.headers["api-key"] == "secret-key"
    assert "authorization" not in sent.headers
    assert json.loads(sent.content)["messages"] == [{"role": "user", "content": "hi"}]
    other = azure.build_request(Request.from_prompt("hi", model="mini"), "secret-key")
    assert "/deployments/mini/chat/completions" in other.url


def test_an_embedding_deployment_packs() -> None:
    """AzureOpenAI(embeddings=True) posts to /embeddings and packs like OpenAIEmbeddings."""
    azure = trio_llm.AzureOpenAI("https://res.openai.azure.com", "emb", embeddings=True)
    sent = azure.build_request(Request.from_input("x"), "k")
    assert sent.url.startswith("https://res.openai.azure.com/openai/deployments/emb/embeddings?")
    assert azure.packing == trio_llm.PackLimits()
