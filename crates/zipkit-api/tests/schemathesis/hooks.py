"""The one rule of `POST /v1/zips` that JSON Schema cannot state, taught to schemathesis.

No two `filename`s of a job may be equal ignoring letter case and Unicode normalization (they
would overwrite each other when extracted on Windows or macOS); the served document says so in
words and marks `urls` `uniqueItems`. Generated items that differ but whose filenames collide
that way get a suffix on the later name, so schema-valid bodies are valid. Items that are
identical stay identical: those break `uniqueItems` on purpose (negative cases) and must still be
refused.
"""

import unicodedata

import schemathesis

# Longest segment the schema allows (MAX_SEGMENT_BYTES), minus room for the suffix.
KEEP = 240


def collision_key(name):
    return unicodedata.normalize("NFC", name.lower())


# On the whole case: schemathesis applies case hooks in every phase (body hooks are not applied
# to the coverage phase's cases).
@schemathesis.hook
def map_case(context, case):
    operation = context.operation
    if operation is None or operation.method.upper() != "POST" or operation.path != "/v1/zips":
        return case
    body = case.body
    if not isinstance(body, dict) or not isinstance(body.get("urls"), list):
        return case
    seen = {}
    for index, item in enumerate(body["urls"]):
        if not isinstance(item, dict) or not isinstance(item.get("filename"), str):
            continue
        key = collision_key(item["filename"])
        first = seen.get(key)
        if first is None:
            seen[key] = item
        elif first != item:
            head, _, last = item["filename"].rpartition("/")
            renamed = f"{last[:KEEP]}~{index}"
            item["filename"] = f"{head}/{renamed}" if head else renamed
            seen[collision_key(item["filename"])] = item
    return case
