"""The Bento box: a daemon beside a Tor relay that runs users' functions."""
