"""Zapping ("Reset It and Forget It", Frati, Traft, Clune, Cheney, ECAI 2024, arXiv 2310.07996).

Re-drawing last-layer weights during pretraining (``operator``), the pretraining regimes i.i.d., ASB and
Meta-ASB with and without zapping (``pretrain``, ``episodes``), the small models they train (``models``),
the presets (``config``), the six-regime experiment behind ``mepo-lab zapping`` (``run``), the paper's claims
as measured (``claims``) and the link to MePo's ``head_reset`` switch (``mepo_link``). The evaluation
protocols (continual and i.i.d. transfer) live in :mod:`mepo_lab.protocols.transfer` so that other methods
can use them.
"""
