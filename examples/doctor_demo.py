"""Run the real ``mailsift doctor`` against a simulated internet, healthy or broken.

    python examples/doctor_demo.py healthy     # what a well-set-up host sees
    python examples/doctor_demo.py broken --egress-ip 127.0.0.1
                                               # port 25 intercepted, IP listed, PTR vs HELO, no SPF
    python examples/doctor_demo.py lying-dns   # a resolver that answers NXDOMAIN for everything
    python examples/doctor_demo.py healthy --json

Loopback only (mailsift.testing): nothing reaches the internet. Exits with the doctor's
exit code.
"""

from __future__ import annotations

import os
import subprocess
import sys

from mailsift.testing import World
from mailsift.testing.doctor_world import list_on_dnsbl, populate_doctor_world

SETTINGS = ("healthy", "broken", "lying-dns")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in SETTINGS:
        print(f"usage: python examples/doctor_demo.py {{{'|'.join(SETTINGS)}}} [doctor options]",
              file=sys.stderr)
        return 2
    setting, extra = argv[0], argv[1:]
    with World() as world:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSIFT_")}
        env.update(world.env())
        env.update(populate_doctor_world(world))
        if setting == "broken":
            # A laptop on a home connection: the ISP intercepts port 25 (so no MX echoes the
            # address: give it with --egress-ip), the IP is on Spamhaus' PBL, its PTR is the
            # ISP's generic name, and the sender domain has no SPF.
            domains = ("gmail-home.test", "outlook-home.test", "yahoo-home.test")
            for domain in domains:
                world.add_middlebox(domain)
            env["MAILSIFT_DOCTOR_MX_DOMAINS"] = ",".join(domains)
            list_on_dnsbl(world, "127.0.0.1", "zen.spamhaus.test", "127.0.0.11",
                          reason="https://check.spamhaus.org/query/ip/127.0.0.1")
            world.dns.remove("1.0.0.127.in-addr.arpa")
            world.dns.add_ptr("127.0.0.1", "host-127-0-0-1.isp.test")
            world.dns.add_a("host-127-0-0-1.isp.test", "127.0.0.1")
            world.dns.remove("mailsift.test", "TXT")
        elif setting == "lying-dns":
            world.dns.set_global_failure("nxdomain")
        command = [sys.executable, "-m", "mailsift.cli", "doctor", *extra]
        return subprocess.run(command, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
