# The spec's "Create Tenant" example (spec/multi-tenancy.txt), re-indented.
# Only the base URL and the admin key come from the environment.
import os

BASE = os.environ["SYNAPSEX_BASE"]              # the spec: https://api.synapsex.ai/v1
ADMIN_KEY = os.environ["SYNAPSEX_ADMIN_KEY"]    # the spec: sk-admin-xxx

import requests

response = requests.post(
    f"{BASE}/tenants",
    headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    json={
        "name": "Farmácia Santa Casa",
        "slug": "farmacia_santa_casa",
        "tier": "pro",
        "contact_email": "admin@farmacia.com",
        "settings": {
            "default_model": "synapsex-chat",
            "max_tokens_per_request": 2048,
            "enable_rerank": True,
            "rerank_tier": "quantum_cpu",
            "custom_system_prompt": "You are a pharmacy assistant for Farmácia Santa Casa."
        }
    }
)

tenant = response.json()
print(f"Tenant ID: {tenant['id']}")
print(f"API Key: {tenant['api_key']}")
