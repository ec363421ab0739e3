"""The rules of `POST /v1/zips` that JSON Schema cannot state, taught to schemathesis.

No two `filename`s of a job may be equal ignoring letter case and Unicode normalization (they
would overwrite each other when extracted on Windows or macOS); the served document says so in
words and marks `urls` `uniqueItems`. Generated items that differ but whose filenames collide
that way get a suffix on the later name, so schema-valid bodies are valid. Items that are
identical stay identical: those break `uniqueItems` on purpose (negative cases) and must still be
refused.

A filename Windows cannot create (a character of `<>:"|?*`, a folder or file name ending in a dot
or space, a device name, a path over 260 UTF-16 units) is refused unless the body asks for
`windows_safe_names`; the document says so in words. A generated body with such a name that
leaves `windows_safe_names` unset (or false) asks for it; in any body that asks for it (so or as
generated), folders too long for any file name to fit in 260 units are shortened, so
schema-valid bodies are valid.

`sse_kms_key_id` names the key of `aws:kms` encryption, so a body with one asks for that.

An item's `filename` is required for an http(s) source, `include`, `exclude` and `path` go
only with a prefix (`s3://<bucket>/<prefix>/`), and a prefix takes no `filename`, `size` or
`modified_at`; the document says so in words. A generated item gets a `filename` when it names
one source and has none (a bucket object's default, its key's last segment, may be a name
Windows cannot create), and loses the fields that do not go with it. `dry_run` fetches only
http(s) sources given in `urls`, so a body with an `s3://` source or a manifest does not ask
for it.
"""

import unicodedata

import schemathesis

# Longest segment the schema allows (MAX_SEGMENT_BYTES), minus room for the suffix.
KEEP = 240


def collision_key(name):
    return unicodedata.normalize("NFC", name.lower())


RESERVED = set('<>:"|?*')
DEVICES = {"CON", "PRN", "AUX", "NUL"} | {f"COM{i}" for i in range(1, 10)} | {f"LPT{i}" for i in range(1, 10)}


def utf16_len(text):
    return len(text.encode("utf-16-le")) // 2


def windows_problem(name):
    if any(c in RESERVED for c in name):
        return True
    for segment in name.split("/"):
        if segment.endswith((".", " ")):
            return True
        if segment.split(".")[0].rstrip(" ").upper() in DEVICES:
            return True
    return utf16_len(name) > 260


def short_folders(name):
    """Folders that leave a file name no room: cut to 20 characters each, and as many of them
    as fit in 200 units."""
    head, _, last = name.rpartition("/")
    if not head or utf16_len(head) <= 200:
        return name
    kept = []
    for segment in head.split("/"):
        if utf16_len("/".join(kept + [segment[:20]])) > 200:
            break
        kept.append(segment[:20])
    return "/".join(kept + [last])


# On the whole case: schemathesis applies case hooks in every phase (body hooks are not applied
# to the coverage phase's cases).
@schemathesis.hook
def map_case(context, case):
    operation = context.operation
    if operation is None or operation.method.upper() != "POST" or operation.path != "/v1/zips":
        return case
    body = case.body
    if not isinstance(body, dict):
        return case
    # A KMS key goes only with KMS encryption.
    if isinstance(body.get("sse_kms_key_id"), str):
        body["server_side_encryption"] = "aws:kms"
    # `manifest_format` goes only with `manifest`.
    if "manifest" not in body:
        body.pop("manifest_format", None)
    elif body.get("dry_run") is True:
        body["dry_run"] = False
    if not isinstance(body.get("urls"), list):
        return case
    if any(isinstance(i, dict) and isinstance(i.get("filename"), str) and windows_problem(i["filename"])
           for i in body["urls"]) and body.get("windows_safe_names") in (None, False):
        body["windows_safe_names"] = True
    if body.get("windows_safe_names") is True:
        for item in body["urls"]:
            if isinstance(item, dict) and isinstance(item.get("filename"), str):
                item["filename"] = short_folders(item["filename"])
    reads_buckets = isinstance(body.get("manifest"), str)
    for index, item in enumerate(body["urls"]):
        if not isinstance(item, dict):
            continue
        url = str(item.get("url", ""))
        reads_buckets = reads_buckets or url.startswith("s3://")
        if url.startswith("s3://") and url.endswith("/"):
            for one_source_only in ("filename", "size", "modified_at"):
                item.pop(one_source_only, None)
            continue
        for prefix_only in ("include", "exclude", "path"):
            item.pop(prefix_only, None)
        if item.get("filename") is None:
            item["filename"] = f"file-{index}"
    if reads_buckets and body.get("dry_run") is True:
        body["dry_run"] = False
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
