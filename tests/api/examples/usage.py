# The spec's "Get Tenant Usage" example (spec/multi-tenancy.txt), re-indented.
# Only the base URL and the admin key come from the environment.
import os

BASE = os.environ["SYNAPSEX_BASE"]              # the spec: https://api.synapsex.ai/v1
ADMIN_KEY = os.environ["SYNAPSEX_ADMIN_KEY"]    # the spec: sk-admin-xxx

import requests

response = requests.get(
    f"{BASE}/tenants/farmacia_santa_casa/usage",
    headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    params={"period": "current_month"}
)

usage = response.json()
print(f"Requests: {usage['requests']}")
print(f"Tokens: {usage['tokens']}")
print(f"Rerank calls: {usage['rerank_calls']}")
print(f"Training jobs: {usage['training_jobs']}")
