"""The daemon, the composition root of pfsmount: ``compose`` builds one from a
``DaemonConfig`` (store and model, mount, scheduler, API) and runs it, ``main`` holds its
lifetime (lock, socket, signals, shutdown), ``command`` is its command line (``python -m
pfsmount.daemon``), ``launch`` starts and stops one from a client, and ``preflight`` says
before it starts what would stop it from mounting. Importing the package loads none of them.
"""
