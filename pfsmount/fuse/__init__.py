"""The pyfuse3 adapter: inodes, handles and errno. What a path shows and what an open file
holds are the view model's and the write overlay's (``pfsmount.pfs.view``, ``overlay``);
nothing here reads the store.
"""
