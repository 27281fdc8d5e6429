#!/usr/bin/env bash
# Tokens per character, bytes against a trained SentencePiece model, for Korean and for English.
#
# The text: every Korean message catalogue this Debian system ships (/usr/share/locale/ko/
# LC_MESSAGES/*.mo, read with Python's gettext module): each entry's Korean translation (msgstr)
# and its English original (msgid), so the two languages say the same things. Every tenth line is
# held out; the tokenizers train on the rest and are measured on the held-out lines.
#   bash benchmarks/tokenizer_korean.sh [build/pipetrain] [vocab size, default 8000]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${1:-$root/build/pipetrain}"
vocab="${2:-8000}"
work="$(mktemp -d /tmp/pipetrain-tokenizer-XXXXXX)"
trap 'rm -rf "$work"' EXIT
python3 - "$work" <<'PY'
import gettext, glob, sys
out = sys.argv[1]
pairs = []
for path in sorted(glob.glob("/usr/share/locale/ko/LC_MESSAGES/*.mo")):
    with open(path, "rb") as f:
        try:
            catalog = gettext.GNUTranslations(f)._catalog
        except Exception:
            continue
    for msgid, msgstr in catalog.items():
        if isinstance(msgid, tuple):
            msgid = msgid[0]
        if not msgid or not msgstr or msgid == msgstr:
            continue
        pairs.append((msgid.replace("\n", " "), msgstr.replace("\n", " ")))
files = {name: open(f"{out}/{name}.txt", "w", encoding="utf-8") for name in ("ko-train", "ko-test", "en-train", "en-test")}
for i, (en, ko) in enumerate(pairs):
    part = "test" if i % 10 == 9 else "train"
    files[f"ko-{part}"].write(ko + "\n")
    files[f"en-{part}"].write(en + "\n")
print(f"{len(pairs)} message pairs from the Korean catalogues", file=sys.stderr)
PY
for lang in ko en; do
  "$bin" tokenizer train --files "$work/$lang-train.txt" --vocab-size "$vocab" --out "$work/$lang.model" > /dev/null
done
"$bin" tokenizer train --files "$work/ko-train.txt,$work/en-train.txt" --vocab-size "$((2 * vocab))" --out "$work/both.model" > /dev/null
for lang in ko en; do
  "$bin" tokenizer stats --files "$work/$lang-test.txt" --tokenizer "$work/$lang.model" | sed "s|$work/||g"
  "$bin" tokenizer stats --files "$work/$lang-test.txt" --tokenizer "$work/both.model" | tail -n 1 | sed "s|$work/||g"
done
