"""The service with parts of save-create switched off, to weigh them (`bench.ablation:app`).

ABLATE names the parts to skip, separated by "+". Only a create is taken apart as
described (an upsert, a PATCH or a list would answer wrongly, or fail):

- `writes`: the transaction (the lock, BEGIN, both INSERTs, COMMIT); the row and its
  audit entry are still built and bound, and the answer is the row not written.
- `audit`: the audit entry's INSERT (the integration's is still written).
- `schema`: marshmallow; the parsed JSON body is used as it is.
- `encryption`: Fernet; the credentials are stored as a fixed string.
- `key-lookup`: the API key's query; every key passes as bench_owner's.

Only bench/turns.py serves it. Its answers are wrong on purpose: never deploy it.
"""
import os

from potpie_flask import auth, bodies, integrations
from wsgi import app

PARTS = ("writes", "audit", "schema", "encryption", "key-lookup")
ablate = set(filter(None, os.environ.get("ABLATE", "").split("+")))
if ablate - set(PARTS):
    raise SystemExit(f"ABLATE: unknown part(s) {sorted(ablate - set(PARTS))}; known: {PARTS}")

if "writes" in ablate:
    def save_nothing(owner, fields, vault, request_id=None):
        row, changes = integrations._new_row(owner, fields, vault)
        integrations._insertion(row, changes, request_id)
        return row

    integrations.save = save_nothing
if "audit" in ablate:
    with_audit = integrations._insertion
    integrations._insertion = lambda row, changes, request_id: with_audit(
        row, changes, request_id)[:1]
if "schema" in ablate:
    bodies.load_body = lambda schema, data: data
if "encryption" in ablate:
    app.extensions["potpie_vault"].seal = lambda secrets: "not encrypted"
if "key-lookup" in ablate:
    auth.owner_of = lambda key: "bench_owner"
if ablate:
    app.logger.warning("bench.ablation: serving with %s switched off", "+".join(sorted(ablate)))
