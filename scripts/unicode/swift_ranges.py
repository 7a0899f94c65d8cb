"""Code point sets as the generated Swift tables spell them: sorted,
disjoint `ClosedRange<UInt32>` literals. Shared by the generators here."""


def ranges(values):
    """Sorted [first, last] runs of consecutive code points in `values`."""
    result = []
    for value in sorted(values):
        if result and result[-1][1] == value - 1:
            result[-1][1] = value
        else:
            result.append([value, value])
    return result


def swift_ranges(values, indent="        ", width=110):
    """`values` as Swift range literals, wrapped at `width` columns."""
    lines, line = [], indent
    for item in (f"0x{a:X}...0x{b:X}" for a, b in ranges(values)):
        if len(line) + len(item) + 2 > width:
            lines.append(line.rstrip())
            line = indent
        line += item + ", "
    lines.append(line.rstrip())
    return "\n".join(lines)
