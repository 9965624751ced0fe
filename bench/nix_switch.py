"""The switch step of bench/nix.sh: rounds of a nixdeck switch (REST POST → the command's
end, polled every 5 ms in this one process, so the figure holds no process start-ups) and
of the plain steps nixos-rebuild runs, each on a new version of the test flake."""

import json
import os
import statistics
import subprocess
import sys
import time

from deck_api import Deck

url, password, repo, test_flake, host, plain_profile, rounds = sys.argv[1:8]
rounds = int(rounds)
attr = f"nixosConfigurations.{host}.config.system.build.toplevel"
deck = Deck(url, password)


def flake(version, message):
    subprocess.run([test_flake, repo, "--host", host, "--version", version, "--commit", message],
                   check=True, stdout=subprocess.DEVNULL)


def nixdeck_switch():
    t0 = time.monotonic()
    detail = deck.run(host, "switch")
    took = (time.monotonic() - t0) * 1000
    if detail["status"] != "ok":
        sys.exit(f"nixdeck's switch ended {detail['status']}")
    return took


def plain_switch():
    t0 = time.monotonic()
    out = subprocess.run(["nix", "build", "--no-link", "--json", f"{repo}#{attr}"],
                         check=True, capture_output=True).stdout
    path = json.loads(out)[0]["outputs"]["out"]
    subprocess.run(["nix-env", "-p", plain_profile, "--set", path], check=True,
                   capture_output=True)
    subprocess.run([f"{path}/bin/switch-to-configuration", "switch"], check=True,
                   capture_output=True)
    return (time.monotonic() - t0) * 1000


def show(label, ms):
    print(f"{label:<28} n={len(ms)}  min {min(ms):.0f}  median {statistics.median(ms):.0f}  "
          f"mean {statistics.mean(ms):.0f}  max {max(ms):.0f} ms")


nixdeck, plain = [], []
for i in range(1, rounds + 1):
    flake(f"1.{i}.0", f"n{i}")
    nixdeck.append(nixdeck_switch())
    flake(f"1.{i}.1", f"p{i}")
    plain.append(plain_switch())
show("nixdeck switch (REST→done)", nixdeck)
show("plain steps", plain)
over = statistics.median(nixdeck) - statistics.median(plain)
print(f"overhead (medians): {over:.0f} ms, {100 * over / statistics.median(plain):.0f} %")
