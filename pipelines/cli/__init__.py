"""The ``metascreen`` command line (typer): one module per verb, assembled in ``main``.

``common`` holds what the verb modules share; the verb modules import only ``common`` (never each
other), and ``main`` builds the top-level app from them. torch, PyG, rdkit and prefect are
imported inside the commands, so ``metascreen --help`` and scoring start fast.
"""
