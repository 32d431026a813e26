"""The website-fingerprinting evaluation: traces, attacks and reports (``bento eval wf``).

The paper's Table 1 measures how well a Deep Fingerprinting attacker on the client's link
tells websites apart with plain Tor, with Browser, and with Browser's padding. This package
reruns it on the testnet:

    traces     what the attacker sees: one cell sequence per visit, and the files they live in
    victim     the watched client: a tor of its own with one guard, and the ports of that link
    sniff      recording the link with dumpcap, one capture per visit
    capture    TLS records between the client's tor and its guard, from a packet capture
    browserlike  plain Tor as a browser uses it: the page and its resources, six at a time per host
    collect    every site, visit and condition on the testnet, resumable
    splits     strict closed-world folds: no visit of a test set is ever trained or validated on
    kfp        k-FP (Hayes and Danezis, 2016): hand-made features and a random forest
    df         Deep Fingerprinting (Sirinam et al., 2018) and Tik-Tok timing, in PyTorch
    experiment the resumable run over conditions, attacks and folds, with checkpoints
    report     the table beside the paper's, and a plot

PyTorch, scikit-learn and dpkt come with the ``eval`` extra: ``pip install -e '.[eval]'``.
"""
