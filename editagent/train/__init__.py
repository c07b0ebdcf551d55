"""Training what the runtime only loads: MEND's hypernetwork (``train.mend``) and the trained scope detector
(``train.scope``), with the embedding detector's calibration. Runtime packages (``editors``, ``scope``, ``memory``)
never import this package; it imports them and ``editagent.eval``."""
