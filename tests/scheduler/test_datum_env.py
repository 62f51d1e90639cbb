"""The environment a datum's program gets is the one Pachyderm documents and sets: through a live
daemon and the real bubblewrap runner, a program that prints only those variables sees, for a
join and for a group, the values Pachyderm's worker would give it (``<input>`` the file's path
under /pfs, ``<input>_COMMIT``, ``PACH_DATUM_<input>_JOIN_ON``/``_GROUP_BY``, ``PACH_DATUM_ID``,
``PACH_JOB_ID``, ``PPS_PIPELINE_NAME``)."""

from __future__ import annotations

from scheduler.datums import DatumFile, datum_id
from tests.scheduler.conftest import Pfsd

# Prints the documented variables it was given, one per line, into a file named by its key
# and its datum.
SHOW = ("env | grep -E '^(orders|prices|PACH_|PPS_)' | grep -v PACH_OUTPUT | sort "
        "> /pfs/out/${PACH_DATUM_orders_JOIN_ON:-$PACH_DATUM_orders_GROUP_BY}-$PACH_DATUM_ID")


def shown(pfsd: Pfsd, pipeline: str) -> dict[str, dict[str, str]]:
    """What each datum printed, by its key and its datum id: checked against its name."""
    out = {}
    for name, text in pfsd.tree(pipeline).items():
        env = dict(line.split("=", 1) for line in text.decode().splitlines())
        assert name.endswith(f"-{env['PACH_DATUM_ID']}")
        out[name.rsplit("-", 1)[0] + "@" + env["orders"]] = env
    return out


def test_a_datum_sees_the_variables_pachyderm_sets(pfsd: Pfsd) -> None:
    pfsd.repos("orders", "prices")
    orders = pfsd.put("orders", {"2024/apple.txt": "3", "2024/pear.txt": "1",
                                 "2025/apple.txt": "5"})
    prices = pfsd.put("prices", {"apple.csv": "0.5", "plum.csv": "2"})
    pfsd.create(
        pfsd.spec("joined", SHOW, {"join": [
            pfsd.pin("orders", "/*/(*).txt", join_on="$1"),
            pfsd.pin("prices", "/(*).csv", join_on="$1")]}),
        pfsd.spec("grouped", SHOW, {"group": [
            pfsd.pin("orders", "/(*)/*.txt", group_by="$1")]}))
    pfsd.wait("prices@master")

    # The join: apple of 2024 and apple of 2025, each with apple's price (pear and plum
    # match nothing): two datums.
    job = pfsd.quick_job("joined")
    assert job["datums"] == 2
    seen = shown(pfsd, "joined")
    assert sorted(seen) == ["apple@/pfs/orders/2024/apple.txt",
                            "apple@/pfs/orders/2025/apple.txt"]
    for year in ("2024", "2025"):
        env = seen[f"apple@/pfs/orders/{year}/apple.txt"]
        assert env == {
            "orders": f"/pfs/orders/{year}/apple.txt", "orders_COMMIT": orders,
            "PACH_DATUM_orders_JOIN_ON": "apple",
            "prices": "/pfs/prices/apple.csv", "prices_COMMIT": prices,
            "PACH_DATUM_prices_JOIN_ON": "apple",
            "PACH_JOB_ID": job["id"], "PPS_PIPELINE_NAME": "joined",
            "PACH_DATUM_ID": env["PACH_DATUM_ID"],
        }
        with pfsd.api() as c:  # the datum's identity: its inputs' names, paths, content
            files = tuple(DatumFile(name, name, "", path, c.inspect_file(
                f"{name}@master:{path}").hash, "file")
                for name, path in (("orders", f"/{year}/apple.txt"),
                                   ("prices", "/apple.csv")))
        assert env["PACH_DATUM_ID"] == datum_id(files)

    # The group: one datum per year; its files' variable names the last of them, and the
    # group key is the year.
    job = pfsd.quick_job("grouped")
    assert job["datums"] == 2
    seen = shown(pfsd, "grouped")
    assert sorted(key.split("@")[0] for key in seen) == ["2024", "2025"]
    env = next(env for key, env in seen.items() if key.startswith("2024@"))
    assert env["PACH_DATUM_orders_GROUP_BY"] == "2024"
    assert env["orders"] in ("/pfs/orders/2024/apple.txt", "/pfs/orders/2024/pear.txt")
    assert env["orders_COMMIT"] == orders
    assert (env["PACH_JOB_ID"], env["PPS_PIPELINE_NAME"]) == (job["id"], "grouped")
    assert "PACH_DATUM_orders_JOIN_ON" not in env
