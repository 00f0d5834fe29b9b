# The spec's "Per-Tenant RAG / Upload Documents" example
# (spec/multi-tenancy.txt): register a dataset, then upload a document,
# re-indented. Only the base URL and the admin key come from the
# environment; the last line (printing what came back) is the test's.
import os

BASE = os.environ["SYNAPSEX_BASE"]              # the spec: https://api.synapsex.ai/v1
ADMIN_KEY = os.environ["SYNAPSEX_ADMIN_KEY"]    # the spec: sk-admin-xxx

import requests

# Register dataset for tenant
response = requests.post(
    f"{BASE}/tenants/farmacia_santa_casa/datasets/register",
    headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    json={
        "name": "product_catalog",
        "type": "documents",
        "data_use": {"allow_rag": True}
    }
)

dataset_id = response.json()['id']

# Upload documents
response = requests.post(
    f"{BASE}/tenants/farmacia_santa_casa/datasets/{dataset_id}/upload/docs",
    headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    json={
        "docs": [
            {
                "doc_id": "med_001",
                "title": "Aspirin 500mg",
                "text": "Pain reliever and anti-inflammatory. Dosage: 1-2 tablets every 4-6 hours...",
                "metadata": {"category": "analgesics", "price": 12.99}
            }
        ]
    }
)

print(f"{dataset_id} {response.status_code}")
