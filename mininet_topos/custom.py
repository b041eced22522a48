"""For the ``mn`` command: ``mn --custom mininet_topos/custom.py --topo fabric,examples/edge-cloud.yaml``.

``mn`` runs Debian's own Python, executes this file with ``exec`` (no ``__file__``, no package
context) and copies every global it leaves behind into its own globals, so this file defines only
``topos`` and cleans up after itself. It makes the repository (and its venv's site-packages, for
networkx) importable, then hands over ``mininet_topos.topos``, each ending ``mn`` with a message
(and without ``mn``'s machine-wide cleanup) when its fabric cannot be built or its names are in use.
Options after the file, e.g. ``--topo fabric,FILE,delay=none,fail_mode=standalone``, go to ``FabricTopo.build``.
"""


def _fabric_topos() -> dict[str, object]:  # builtins only: this file leaves no imports behind
    import inspect
    import os
    import sys

    here = os.path.abspath(inspect.currentframe().f_code.co_filename)  # type: ignore[union-attr]
    repo = os.path.dirname(os.path.dirname(here))
    venv_site = os.path.join(
        repo, ".venv", "lib", f"python{sys.version_info.major}.{sys.version_info.minor}", "site-packages"
    )
    if repo not in sys.path:
        sys.path.insert(0, repo)
    if os.path.isdir(venv_site) and venv_site not in sys.path:
        sys.path.append(venv_site)  # after Debian's own packages: only what they lack comes from here
    import mininet_topos
    from mininet_topos.topo import for_mn_command

    return dict(for_mn_command(mininet_topos.topos))


topos = _fabric_topos()
del _fabric_topos
