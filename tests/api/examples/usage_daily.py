# The spec's "Usage by Day" example (spec/multi-tenancy.txt), re-indented.
# Only the base URL and the admin key come from the environment.
import os

BASE = os.environ["SYNAPSEX_BASE"]              # the spec: https://api.synapsex.ai/v1
ADMIN_KEY = os.environ["SYNAPSEX_ADMIN_KEY"]    # the spec: sk-admin-xxx

import requests

response = requests.get(
    f"{BASE}/tenants/farmacia_santa_casa/usage/daily",
    headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    params={"from": "2024-01-01", "to": "2024-01-31"}
)

for day in response.json()['days']:
    print(f"{day['date']}: {day['requests']} requests, {day['tokens']} tokens")
