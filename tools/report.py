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
