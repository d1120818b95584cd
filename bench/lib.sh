# Shared by the bench scripts: source it, then call write_bench_section.

# write_bench_section NAME HEADING TEXT: replaces what stands between
# <!-- NAME:begin --> and <!-- NAME:end --> in BENCHMARKS.md with TEXT. A file or a
# section that does not exist yet is created (the section under "## HEADING").
write_bench_section() {
  local name=$1 heading=$2 text=$3
  local bench
  bench="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/BENCHMARKS.md"
  python3 - "$bench" "$name" "$heading" "$text" <<'PY'
import os
import sys

path, name, heading, table = sys.argv[1:5]
begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
text = open(path).read() if os.path.exists(path) else (
    "# Benchmarks\n\nFerryMQ against RabbitMQ 3.10 on the same machine, with `ferryperf` as the load generator.\n"
)
if begin not in text or end not in text:
    text = text.rstrip() + f"\n\n## {heading}\n\n{begin}\n{end}\n"
head, rest = text.split(begin, 1)
text = head + f"{begin}\n{table.rstrip(chr(10))}\n{end}" + rest.split(end, 1)[1]
open(path, "w").write(text)
PY
}
