"""Checks META.json (PGXN) against the tree: valid JSON, the keys PGXN's META spec 1.0.0 requires,
and the version Cargo.toml gives the extension (its one source) everywhere it appears."""
import json
import re
import sys

meta = json.load(open("META.json"))
cargo = open("Cargo.toml").read()
version = re.search(r'^version = "([^"]+)"', cargo, re.M).group(1)
errors = []
for key in ["name", "abstract", "version", "maintainer", "license", "provides", "meta-spec"]:
    if key not in meta:
        errors.append(f"META.json lacks {key}")
if meta.get("version") != version:
    errors.append(f"META.json version {meta.get('version')} != Cargo.toml {version}")
for name, provided in meta.get("provides", {}).items():
    if provided.get("version") != version:
        errors.append(f"META.json provides.{name}.version {provided.get('version')} != {version}")
if meta.get("license") != "apache_2_0" or 'license = "Apache-2.0"' not in cargo:
    errors.append("META.json and Cargo.toml disagree on the license")
for e in errors:
    print(e, file=sys.stderr)
sys.exit(1 if errors else 0)
