"""Human-readable tables of build reports and benchmarks."""

__all__ = ["format_report", "format_table"]


def format_table(headers, rows):
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[n]) for row in cells) for n in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cells[0], widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) if n else c.ljust(w) for n, (c, w) in enumerate(zip(row, widths)))
              for row in cells[1:]]
    return "\n".join(lines)


def format_report(report):
    head = (f"{report['design']} on {report['board']} ({report['device']}), "
            f"{', '.join(f'{k}={v}' for k, v in report['parameters'].items())}")
    res = format_table(["resource", "used", "available", "%"], [
        (name, r["used"], r["available"], f"{100 * r['used'] / r['available']:.1f}" if r["available"] else "-")
        for name, r in report["resources"].items()])
    clocks = format_table(["clock", "achieved MHz", "target MHz", "met"], [
        (c["name"], c["achieved_mhz"], c["target_mhz"], "yes" if c["met"] else "NO") for c in report["clocks"]])
    # figures of one line; tables (a network's plan) are printed by their command
    info = "  ".join(f"{k}={v}" for k, v in report.get("design_info", {}).items()
                     if not (isinstance(v, (dict, list)) and any(isinstance(e, dict) for e in
                                                                  (v.values() if isinstance(v, dict) else v)))
                     and not (isinstance(v, str) and "\n" in v))
    bit = report["bitstream"]
    return "\n".join([
        head, "", res, "", clocks, "",
        f"timing met: {'yes' if report['timing_met'] else 'NO'}    build time: {report['seconds']} s",
        f"design: {info}" if info else "",
        f"bitstream: {bit['path']} ({bit['bytes']} bytes, sha256 {bit['sha256'][:16]}...)",
        f"report: {report.get('json_path', '')}",
    ])


def format_breakdown(info, unit):
    """A build's resources per part (``design_info["breakdown"]``, :func:`insitu.tools.build.breakdown`) as
    a table, each part's measured logic and block RAM next to the plan's estimate when the design has a
    plan (a network), with the estimate's error. Empty when the build made no breakdown."""
    found = info.get("breakdown")
    if not found:
        return ""
    if "error" in found:
        return f"resources per part: not measured ({found['error']})"
    estimate = {}
    if "plan" in info:
        for row in info["plan"]:
            estimate[row["layer"]] = (row["logic"], row["block_ram"], row["dsp"])
        link = info.get("link_estimate")
        if link:                        # the host link's estimate is in the total, not in the plan's rows
            estimate["link"] = (link["logic"], link["blocks"], link.get("dsp", 0))
        total = info["estimate"]
        estimate["glue"] = tuple(total[key] - sum(e[n] for e in estimate.values())
                                 for n, key in enumerate(("logic", "blocks", "dsp")))
    order = list(estimate) + sorted(set(found["parts"]) - set(estimate) - {"harness"}) + ["harness"]
    rows = []
    for part in order:
        counts = found["parts"].get(part)
        if counts is None:
            continue
        est = estimate.get(part)
        logic = counts.get("logic", 0)
        error = f"{(est[0] - logic) / logic:+.0%}" if est and logic else ""
        cells = [counts.get("lut4", 0), counts.get("ff", 0), counts.get("carry", 0), counts.get("bram", 0),
                 counts.get("dsp", 0)]
        if estimate:
            rows.append((part, f"{logic:,}", "" if est is None else f"{est[0]:,}", error, *cells[:4],
                         "" if est is None else est[1], cells[4], "" if est is None else est[2]))
        else:
            rows.append((part, f"{logic:,}", *cells))
    head = (["part", unit, f"est. {unit}", "error", "LUT4", "FF", "carry", "BRAM", "est. BRAM", "DSP", "est. DSP"]
            if estimate else ["part", unit, "LUT4", "FF", "carry", "BRAM", "DSP"])
    return ("resources per part (a synthesis that keeps the hierarchy; the measured " + unit + " total shared "
            "out by LUTs and flip-flops):\n" + format_table(head, rows))
