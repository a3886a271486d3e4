"""What else used the CPU during a measurement (for benchmarks run beside other work)."""

import os


def cpu_times():
  """{pid: (command, CPU seconds)} of this machine's processes."""
  ticks = os.sysconf("SC_CLK_TCK")
  times = {}
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    except OSError:
      continue
    command = stat[stat.index("(") + 1:stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2:].split()
    times[int(pid)] = (command, (int(fields[11]) + int(fields[12])) / ticks)
  return times


def others(before, after, own):
  """{command: CPU seconds} of the other processes between two `cpu_times` (over 1 s)."""
  used = {}
  for pid, (command, seconds) in after.items():
    if pid in own:
      continue
    spent = seconds - before.get(pid, (command, 0.0))[1]
    if spent > 1.0:
      used[command] = used.get(command, 0.0) + spent
  return used


def describe(used):
  """`others`' result as a short text."""
  return ", ".join(f"{c} {s:.0f} CPU-s" for c, s in sorted(used.items(), key=lambda i: -i[1])
                   ) or "nothing"
