# The spec's "Tenant Settings / Configuration Options" example
# (spec/multi-tenancy.txt), re-indented. Only the base URL, the admin key and
# the tenant id come from the environment.
import os

BASE = os.environ["SYNAPSEX_BASE"]              # the spec: https://api.synapsex.ai/v1
ADMIN_KEY = os.environ["SYNAPSEX_ADMIN_KEY"]    # the spec: sk-admin-xxx
TENANT_ID = os.environ["SYNAPSEX_TENANT_ID"]    # the spec: tenant_abc

import requests

response = requests.patch(
    f"{BASE}/tenants/{TENANT_ID}/settings",
    headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    json={
        # Model settings
        "default_model": "synapsex-chat-32k",
        "max_tokens_per_request": 4096,
        "default_temperature": 0.7,

        # Reranking
        "enable_rerank": True,
        "rerank_tier": "quantum_cpu",
        "rerank_k": 4,

        # Custom behavior
        "custom_system_prompt": "You are a helpful assistant for...",
        "allowed_topics": ["healthcare", "products", "orders"],
        "blocked_topics": ["competitors", "legal_advice"],

        # RAG
        "enable_rag": True,
        "rag_top_k": 5,
        "rag_threshold": 0.7,

        # Rate limits (overrides tier defaults)
        "rate_limit_rpm": 150,
        "daily_token_limit": 500000
    }
)
