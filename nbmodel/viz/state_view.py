"""HTML tables of a System's state: page caches, folio bits, per-CPU TLB entries, the event log, invariants,
counters, and a one-line timeline of a step's events. Every function returns an HTML string.

Tables carry their own light background and dark text (inline styles, no class names to collide with), so
they read the same on a light or a dark page, in JupyterLab and in the static book. Output depends only on the
model's state: no ids, no addresses of Python objects, no times.
"""

from __future__ import annotations

import html

from nbmodel.counters import COUNTERS
from nbmodel.designs import PRIVATE_NO_DIRECT_MAP
from nbmodel.invariants import INVARIANTS
from nbmodel.pagetable import MAPPED, VALID
from nbmodel.system import OPS, REQUIRED
from nbmodel.trace import Event, show_value
from nbmodel.units import parse_size

TEXT = "#1a1a1a"
BG = "#fbfbfb"
HEAD = "#e6e6e6"
GOOD = "#cfeccb"
BAD = "#f6b8b8"
WARN = "#ffd59a"
MUTED = "#6b6b6b"
CURRENT = "#fff4c2"

TABLE = (f'style="border-collapse:collapse;background:{BG};color:{TEXT};font-size:0.82em;line-height:1.35;'
         'margin:2px 0 8px 0;font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif"')
TH = f'style="background:{HEAD};color:{TEXT};text-align:left;padding:2px 6px;border:1px solid #c8c8c8"'
TD = 'style="padding:2px 6px;border:1px solid #d8d8d8;vertical-align:top;text-align:left"'
CAPTION = f'style="caption-side:top;text-align:left;font-weight:600;color:{TEXT};background:{BG};padding:2px 6px"'

# Event kinds coloured in timelines and logs.
EVENT_COLOURS = {
    "zap": BAD, "restore": GOOD, "insert": "#c9dcf7", "delete": "#c9dcf7", "split": "#d6d6d6",
    "collapse": "#d6d6d6", "flush": WARN, "flush_all": WARN, "ipi": WARN, "zero": "#f3e29c",
    "oops": "#e57373", "stale": "#ffb347", "warn": "#ffb347", "error": "#e57373", "free_folio": "#e1d5f5",
    "invalidate": "#e1d5f5", "prepare": "#e1d5f5", "mermap": "#d0f0f0", "alloc": "#eeeeee", "free": "#eeeeee",
    "access": "#f0f0f0",
}


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def cell(value, bg: str | None = None, title: str | None = None) -> str:
    """One ``<td>`` of the state tables: ``value`` as given (ready HTML), a background colour, a hover text."""
    style = "padding:2px 6px;border:1px solid #d8d8d8;vertical-align:top;text-align:left" + \
        (f";background:{bg}" if bg else "")
    tip = f' title="{esc(title)}"' if title else ""
    return f'<td style="{style}"{tip}>{value}</td>'


def table(caption: str, headers: list[str], rows: list[list[str]], empty: str = "(none)") -> str:
    """A table with a caption; ``rows`` are lists of ready HTML cells (``<td>...</td>``) or plain strings."""
    head = "".join(f"<th {TH}>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(c if c.startswith("<td") else f"<td {TD}>{esc(c)}</td>" for c in row)
        body.append(f"<tr>{cells}</tr>")
    if not rows:
        body.append(f'<tr><td {TD} colspan="{len(headers)}"><span style="color:{MUTED}">{esc(empty)}</span></td></tr>')
    return f"<table {TABLE}><caption {CAPTION}>{esc(caption)}</caption><tr>{head}</tr>{''.join(body)}</table>"


# -- direct-map state of one folio --------------------------------------------------------------------------
def direct_map_state(k, pfn: int, npages: int) -> str:
    """``"valid"``, ``"invalid"``, ``"mixed"`` or ``"unmapped"`` for the folio's pages."""
    pt = k.dmap.pt
    valid = invalid = 0
    for p in range(pfn, pfn + npages):
        prot = pt.prot(p)
        if not prot & MAPPED:
            continue
        if prot & VALID:
            valid += 1
        else:
            invalid += 1
    if valid and invalid:
        return "mixed"
    if valid:
        return "valid"
    return "invalid" if invalid else "unmapped"


def _dm_cell(state: str, cached_no_dm: bool) -> str:
    # In an AS_NO_DIRECT_MAP mapping a valid entry is the problem; elsewhere it is normal.
    bg = (BAD if state != "invalid" else GOOD) if cached_no_dm else None
    return cell(esc(state), bg)


def pagecache_table(system) -> str:
    """One row per file: its kind, mapping flags, nrpages and what sits at each index."""
    rows = []
    for name in sorted(system.files):
        f = system.files[name]
        m = f.mapping
        entries = ", ".join(f"[{i}] {fo.name}" for i, fo in sorted(m.i_pages.items())) or "empty"
        extra = ""
        if f.kind == "guest_memfd":
            extra = f" flags={'|'.join(sorted(f.flags)) or '0'} vm={f.vm_type}"
        rows.append([name, f"{f.kind}{extra}", " ".join(sorted(m.flags)), str(m.nrpages), entries])
    return table("page cache (struct address_space per file)", ["file", "kind", "mapping flags", "nrpages",
                                                               "i_pages"], rows, empty="no files yet")


def folio_table(system, limit: int = 64, tail: int = 0, caption: str = "folios in page caches (struct folio)") -> str:
    """One row per cached folio: PFN, order, refcount, flags, folio->private, direct map, TLB holders, content.
    The first ``limit`` folios are listed and, with ``tail``, the last ``tail`` ones, with a "... N more
    folios" row for those left out."""
    k = system.k
    total, shown = _pick_folios(system, limit, tail)
    rows = []
    for i, (name, folio) in enumerate(shown):
        if i == limit and total > limit + tail:
            rows.append(_more_row(total - limit - tail))
        f = system.files[name]
        no_dm = f.mapping.no_direct_map()
        bit = folio.private & PRIVATE_NO_DIRECT_MAP
        private = "NO_DIRECT_MAP (bit 0)" if bit else "0"
        if folio.private & ~PRIVATE_NO_DIRECT_MAP:
            private += f" | {folio.private & ~PRIVATE_NO_DIRECT_MAP:#x}"
        state = direct_map_state(k, folio.pfn, folio.nr_pages)
        holders = k.tlb_holders(folio.pfn, folio.nr_pages)
        tlb_bg = BAD if holders and state == "invalid" else None
        tlb = ", ".join(f"CPU {c}" for c in holders) + (" (stale)" if tlb_bg else "") if holders else "-"
        rows.append([f"{name}[{folio.index}]", folio.name, f"{folio.pfn:#x}", str(folio.order),
                     str(folio.refcount), ", ".join(sorted(folio.flags)) or "-",
                     cell(esc(private), "#e1d5f5" if bit else None,
                           "KVM_GMEM_FOLIO_NO_DIRECT_MAP in folio->private (v12)"),
                     _dm_cell(state, no_dm), cell(esc(tlb), tlb_bg), folio.content])
    if total > limit + tail and not tail:
        rows.append(_more_row(total - limit))
    return table(caption, ["where", "folio", "pfn", "order", "ref", "flags", "private", "direct map", "TLB",
                           "content"], rows, empty="no folio is cached")


def _pick_folios(system, limit: int, tail: int) -> tuple[int, list]:
    """``(number of cached folios, [(file, folio)])``: all of them if at most ``limit + tail``, else the first
    ``limit`` and the last ``tail`` in file and index order (without building a list of all of them)."""
    files = [(name, system.files[name].mapping) for name in sorted(system.files)]
    total = sum(len(m.i_pages) for _, m in files)
    if total <= limit + tail:
        return total, [(name, folio) for name, m in files for folio in m.folios()]
    head, end = [], []
    for name, m in files:
        if len(head) >= limit:
            break
        head += [(name, m.i_pages[i]) for i in sorted(m.i_pages)[:limit - len(head)]]
    for name, m in reversed(files):
        if len(end) >= tail:
            break
        end = [(name, m.i_pages[i]) for i in sorted(m.i_pages)[max(0, len(m.i_pages) - (tail - len(end))):]] + end
    return total, head + end


def _more_row(n: int) -> list:
    return [cell(f'<span style="color:{MUTED}">... {n} more folios</span>')] + [""] * 9


def tlb_table(system_or_kernel, marks=None, limit: int = 12) -> str:
    """Per-CPU cached kernel translations. An entry whose page-table entry is now invalid is marked stale.
    ``marks`` (list of Mark) name the folio an entry covers."""
    k = getattr(system_or_kernel, "k", system_or_kernel)
    marks = marks or []
    pt = k.dmap.pt
    rows = []
    for tlb in k.tlbs:
        items = sorted(tlb.entries.items())
        cells = []
        for first, span in items[:limit]:
            size = {1: "4K", 16: "64K", 512: "2M", 8192: "32M", 262144: "1G"}.get(span, f"{span} pages")
            names = [m.label for m in marks if m.pfn < first + span and first < m.pfn + m.npages]
            stale = any(not pt.is_valid(p) for p in _sample(first, span, marks))
            label = f"{first:#x} ({size})" + (f" = {', '.join(names[:3])}" if names else "")
            colour = BAD if stale else "#eeeeee"
            cells.append(f'<span style="background:{colour};padding:0 4px;border-radius:3px;margin-right:4px;'
                         f'white-space:nowrap">{esc(label)}{" STALE" if stale else ""}</span>')
        if len(items) > limit:
            cells.append(f'<span style="color:{MUTED}">... {len(items) - limit} more</span>')
        rows.append([f"CPU {tlb.cpu}" + (" (current)" if tlb.cpu == k.current_cpu else ""),
                     cell(" ".join(cells) or f'<span style="color:{MUTED}">empty</span>')])
    return table("TLB entries per CPU (first pfn, span)", ["cpu", "cached kernel translations"], rows)


def _sample(first: int, span: int, marks) -> list[int]:
    """PFNs worth checking for staleness in an entry: its first page and every marked page inside it."""
    pfns = {first}
    for m in marks:
        lo, hi = max(first, m.pfn), min(first + span, m.pfn + m.npages)
        pfns.update(range(lo, min(hi, lo + 512)))
    return sorted(pfns)


def invariant_table(system, current_step: int | None = None) -> str:
    """Each invariant: held / broken at step N / n/a, with its reasoning as a tooltip."""
    status = system.invariant_status()
    rows = []
    for key, inv in INVARIANTS.items():
        st = status[inv.name]
        bg = GOOD if st == "held" else (BAD if st.startswith("broken") else None)
        now = ""
        if system.steps and key in system.steps[-1].broken:
            now = system.steps[-1].broken[key]
        rows.append([f"({key})", cell(esc(inv.name), None, inv.why), cell(esc(st), bg), now or "-"])
    return table("invariants (checked after every step; hover a name for why)", ["", "invariant", "status",
                                                                                  "broken now because"], rows)


DEFAULT_COUNTERS = ("DirectMap4k", "DirectMap2M", "DirectMap1G", "direct_map_level2_splits",
                    "direct_map_level3_splits", "tlb_flushes", "tlb_full_flushes", "ipis", "zaps", "restores",
                    "oops", "stale_reads", "warns", "freed_unmapped")


def counters_table(system_or_kernel, names=DEFAULT_COUNTERS, delta: dict | None = None,
                   caption: str = "counters") -> str:
    """Counter values (DirectMap* in kB, as /proc/meminfo prints them) and, if given, the last step's change."""
    k = getattr(system_or_kernel, "k", system_or_kernel)
    rows = []
    for name in names:
        row = [cell(esc(name), None, COUNTERS.get(name, "")), str(k.counters[name])]
        if delta is not None:
            change = delta.get(name, 0)
            row.append(cell(esc(f"{change:+d}" if change else ""), WARN if change else None))
        rows.append(row)
    headers = ["counter", "value"] + (["change"] if delta is not None else [])
    return table(caption, headers, rows)


#: Event kinds whose consecutive runs are merged into one chip (a 2M zero makes 512 ``access`` events).
MERGED_KINDS = frozenset(("access", "restore", "zap", "flush", "oops", "stale", "alloc", "insert", "zero", "free",
                          "delete", "free_folio", "mermap", "prepare", "ipi"))


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _span(key: str, values: list) -> str:
    """The values one argument takes over a run of merged events, as text: the value if it never changes,
    ``first..last`` for consecutive integers (up or down), else the values themselves (at most three shown)."""
    shown = [show_value(key, v) for v in values]
    if all(v == values[0] for v in values):
        return shown[0]
    if all(_is_int(v) for v in values):
        step = values[1] - values[0]
        if step in (1, -1) and all(b - a == step for a, b in zip(values, values[1:], strict=False)):
            return f"{shown[0]}..{shown[-1]}"
    distinct = list(dict.fromkeys(shown))
    if len(distinct) <= 3:
        return ",".join(distinct)
    return f"{distinct[0]},{distinct[1]},...,{distinct[-1]} ({len(distinct)} values)"


def _merged_text(run) -> str:
    """One text for a run of events of one kind with the same argument names: each argument's span."""
    first = run[0]
    if len(run) == 1:
        return str(first)
    inner = " ".join(f"{k}={_span(k, [e.args[k] for e in run])}" for k in first.args)
    return f"{first.kind}({inner})" if inner else first.kind


def kinds_and_args(events):
    """``(kind, args)`` of each event, read from a :class:`~nbmodel.trace.Trace`'s parallel lists when it has
    them (no Event built per event: a large step has millions)."""
    kinds, args = getattr(events, "kinds", None), getattr(events, "args", None)
    if kinds is not None and args is not None:
        return zip(kinds, args, strict=True)
    return ((e.kind, e.args) for e in events)


def compress_events(events, limit: int = 14) -> list[tuple[str, int, str]]:
    """``[(text, repeat, kind)]``: consecutive events of one kind (and the same argument names) become one entry
    with a count whose text shows every argument's range, e.g. ``delete(mapping=g index=0..2 pfn=0x10..0x12)``
    for three deletes (an argument that differs in a way a range cannot say is listed). Identical events merge
    to the plain text. The list is cut to ``limit`` entries."""
    runs: list[list] = []
    last_kind = last_keys = None
    for kind, args in kinds_and_args(events):
        if kind == last_kind and kind in MERGED_KINDS and args.keys() == last_keys:
            if len(runs) <= limit:
                runs[-1].append(Event(kind, args))
            continue
        # Past the shown entries a run only needs counting (a huge step has ~10 events per folio).
        runs.append([Event(kind, args)] if len(runs) < limit else None)
        last_kind, last_keys = kind, args.keys()
    out = [(_merged_text(r), len(r), r[0].kind) for r in runs[:limit]]
    return out + ([(f"... {len(runs) - limit} more", 1, "")] if len(runs) > limit else [])


def timeline(events, limit: int = 14) -> str:
    """A step's events as coloured chips joined by arrows, in the order the modelled kernel did them."""
    chips = []
    for text, n, kind in compress_events(events, limit):
        bg = EVENT_COLOURS.get(kind, "#eeeeee")
        rep = f" <b>&#215;{n}</b>" if n > 1 else ""
        chips.append(f'<span style="background:{bg};color:{TEXT};padding:1px 5px;border-radius:3px;'
                     f'white-space:normal;overflow-wrap:anywhere;display:inline-block;margin:1px 0">'
                     f'{esc(text)}{rep}</span>')
    if not chips:
        return f'<span style="color:{MUTED}">no events</span>'
    return ' <span style="color:#8c8c8c">&#8594;</span> '.join(chips)


def _defaults(op: str) -> dict:
    """The op's optional arguments and their default values (sizes in bytes), to leave out of titles."""
    spec = OPS.get(op)
    out = {}
    for name, (typ, default) in (spec.args.items() if spec else ()):
        if default is REQUIRED:
            continue
        out[name] = parse_size(default) if typ == "size" and default is not None else default
    return out


def step_title(step) -> str:
    """``"write file=g offset=4K len=4K -> EPERM"``: arguments left at their defaults are not shown."""
    defaults = _defaults(step.op)
    args = " ".join(f"{k}={_short(v)}" for k, v in step.args.items()
                    if k not in defaults or defaults[k] != v)
    extra = f" saw={step.saw}" if step.saw is not None else ""
    extra += f" interrupt={step.interrupt}" if step.interrupt is not None else ""
    return f"{step.op} {args} -> {step.result}{extra}".replace("  ", " ")


def _short(v) -> str:
    if isinstance(v, int) and not isinstance(v, bool) and v >= 4096 and v % 1024 == 0:
        for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
            if v % size == 0:
                return f"{v // size}{unit}"
    return str(v)


def script_title(spec: dict, skip=()) -> str:
    """A not-yet-run step (``{"op": ..., **args}``) as text, leaving out the argument names in ``skip``."""
    args = " ".join(f"{k}={v}" for k, v in spec.items() if k != "op" and k not in skip)
    return f"{spec['op']} {args}".strip()


def event_log(steps, current: int | None = None, pending=(), limit: int = 14) -> str:
    """The steps so far with their results, broken invariants and events; ``current`` (a step index) is
    highlighted; ``pending`` (step dicts not run yet) are listed greyed out after them."""
    rows = []
    for st in steps:
        bg = CURRENT if st.index == current else None
        res_bg = BAD if st.result in ("oops", "stale") or st.interrupt == "stale" else None
        broken = ", ".join(f"({k})" for k in sorted(st.broken)) or "-"
        rows.append([cell(str(st.index), bg), cell(esc(step_title(st)), bg or res_bg),
                     cell(esc(broken), BAD if st.broken else bg), cell(timeline(st.events, limit), bg)])
    start = len(steps)
    for i, spec in enumerate(pending, start=start + 1):
        rows.append([cell(f'<span style="color:{MUTED}">{i}</span>'),
                     cell(f'<span style="color:{MUTED}">{esc(script_title(spec))}</span>'), "", ""])
    return table("event log (one row per step)", ["#", "step -> result", "broken", "events"], rows,
                 empty="no steps yet")


def state_panel(system, marks=None, current: int | None = None, pending=(), counters: bool = True) -> str:
    """Everything but the diagram, stacked: folios, page caches, TLBs, invariants, counters, event log."""
    delta = system.steps[-1].counters if system.steps else None
    row1 = [folio_table(system), pagecache_table(system)]
    row2 = [invariant_table(system), tlb_table(system, marks)]
    if counters:
        names = [n for n in DEFAULT_COUNTERS if system.k.counters[n] or (delta or {}).get(n)]
        row2.append(counters_table(system, names=names, delta=delta, caption="counters (those not zero)"))
    log = event_log(system.steps, current=current, pending=pending)
    return f'<div class="nbmodel-state">{flex(row1)}\n{flex(row2)}\n{log}</div>'


def flex(parts: list[str]) -> str:
    """Blocks side by side, wrapping onto the next line on narrow pages."""
    cells = "".join(f'<div style="flex:0 1 auto;max-width:100%;overflow-x:auto">{p}</div>' for p in parts)
    return f'<div style="display:flex;flex-wrap:wrap;gap:0 14px;align-items:flex-start">{cells}</div>'


def step_tone(step) -> str:
    """``"bad"`` if the step broke an invariant or made an oops, stale read or WARN happen; ``"warn"`` for an
    error return; else ``"good"``."""
    def failure(e) -> bool:  # an interrupting read that finds no translation is the protection working
        return e.kind in ("stale", "warn") or (e.kind == "oops" and e.get("what") != "racing read")

    if step.broken or step.result in ("oops", "stale") or step.interrupt == "stale" or \
            any(failure(e) for e in step.events):
        return "bad"
    if step.result not in ("0", "ok") and not step.result.isdigit():
        return "warn"
    return "good"


def step_card(step, label: str = "") -> str:
    """A step's title (and broken invariants) on a coloured banner, its events as a timeline below."""
    broken = "; ".join(f"({k}) {why}" for k, why in sorted(step.broken.items()))
    text = f"{label}{step.index}. {step_title(step)}" + (f" | broken: {broken}" if broken else "")
    return (banner(text, step_tone(step)) +
            f'<div style="font-size:0.82em;margin:0 0 8px 0">{timeline(step.events, limit=24)}</div>')


def delta_table(caption: str, rows: list[tuple[str, dict]], names) -> str:
    """Counter changes side by side: one row per ``(label, delta)``, one column per counter in ``names``."""
    out = []
    for label, delta in rows:
        out.append([label] + [cell(esc(delta.get(n, 0)), WARN if delta.get(n) else None) for n in names])
    return table(caption, [""] + list(names), out)


def banner(text: str, tone: str = "info") -> str:
    """A one-line coloured note (``tone``: info, good, bad, warn)."""
    bg = {"info": "#e3ecfa", "good": GOOD, "bad": BAD, "warn": WARN}[tone]
    return (f'<div style="background:{bg};color:{TEXT};padding:4px 8px;border-radius:4px;margin:4px 0;'
            f'font-size:0.9em;line-height:1.35">{esc(text)}</div>')


__all__ = ["table", "direct_map_state", "pagecache_table", "folio_table", "tlb_table", "invariant_table",
           "counters_table", "timeline", "event_log", "state_panel", "banner", "step_title", "script_title",
           "compress_events", "flex", "step_card", "step_tone", "delta_table", "DEFAULT_COUNTERS"]
