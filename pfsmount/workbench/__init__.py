"""What the CLI runs on the user's side of the socket: tools that reach the daemon only
through ``pfsmount.api``'s client (or the wire types it returns) and run programs here, in
the runners' sandbox or container: ``notebook`` (JupyterLab over pinned commits) and
``replay`` (a reproduced datum, rerun by hand). Nothing here runs inside the daemon, and
nothing below imports it.
"""
