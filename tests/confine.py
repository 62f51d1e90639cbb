"""Run a command on a machine that is not the developer's: no ``/pfs``, and as an ordinary user.

``confined(argv, ...)`` wraps a command so that it runs in a mount namespace of its own whose
root is rebuilt from the host's top-level entries *without* ``/pfs`` (``pivot_root``, not
``chroot``: user namespaces, which the sandbox needs, cannot be made in a chroot). So a test
sees what a fresh machine gives whether or not the developer's machine has ``/pfs``. A top
directory others cannot enter (``/root`` here) becomes an empty tmpfs holding only the
``keep`` paths (this venv's Python lives under ``/root/.pyenv``), so an ordinary user can run
``pfsmount`` and nothing of root's home. Then it drops to ``user`` (a ``User`` made by
``ordinary_user``) with a clean environment.

Namespaces need root; as an ordinary user already, commands run as they are (that user's
machine is what it is).
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

NAME = "pfsm-tester"
SCRIPT = r"""
set -e
new=$1 cwd=$2 user=$3 keep=$4; shift 4
mount -t tmpfs -o mode=755 nopfs "$new"
for e in /*; do
  n=${e#/}
  if [ "$n" = pfs ]; then continue
  elif [ -L "$e" ]; then ln -s "$(readlink "$e")" "$new/$n"
  elif [ -d "$e" ] && [ -n "$user" ] && ! setpriv --reuid="${user%%:*}" \
      --regid="$(echo "$user" | cut -d: -f2)" --clear-groups test -x "$e"; then
    mkdir "$new/$n"; mount -t tmpfs -o mode=755 closed "$new/$n"
    for k in $(echo "$keep" | tr : ' '); do
      case "$k" in "$e"/*) mkdir -p "$new$k"; mount --rbind "$k" "$new$k";; esac
    done
  elif [ -d "$e" ]; then mkdir "$new/$n"; mount --rbind "$e" "$new/$n"
  else : > "$new/$n"; mount --bind "$e" "$new/$n"
  fi
done
mkdir "$new/.old"; cd "$new"; pivot_root . .old; umount -l /.old; rmdir /.old
cd "$cwd"
if [ -n "$user" ]; then
  uid=${user%%:*}; rest=${user#*:}; gid=${rest%%:*}; home=${rest#*:}
  exec setpriv --reuid="$uid" --regid="$gid" --clear-groups env -i HOME="$home" \
    PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 "$@"
fi
exec "$@"
"""


class User(NamedTuple):
    name: str
    uid: int
    gid: int
    home: str


def ordinary_user() -> User:
    """An ordinary user (made with ``useradd`` if root and it does not exist yet), or the
    caller when the tests already run as one."""
    if os.getuid() != 0:
        me = pwd.getpwuid(os.getuid())
        return User(me.pw_name, me.pw_uid, me.pw_gid, me.pw_dir)
    try:
        entry = pwd.getpwnam(NAME)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--user-group", "--shell", "/bin/sh",
                        NAME], check=True, capture_output=True, timeout=60)
        entry = pwd.getpwnam(NAME)
    return User(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def python_home() -> str:
    """Where this venv's interpreter really lives: the user must be able to reach it."""
    return str(Path(os.path.realpath(sys.executable)).parents[1])


def confined(argv: list[str], scratch: Path, cwd: Path, user: User | None = None) -> list[str]:
    """``argv`` run without /pfs (and as ``user``): ``scratch`` is an empty directory the
    new root is built on (one is enough for any number of commands at once)."""
    if os.getuid() != 0:
        return argv
    who = f"{user.uid}:{user.gid}:{user.home}" if user else ""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", SCRIPT, "confine",
            str(scratch), str(cwd), who, python_home(), *argv]
