"""A wide area between simulated machines on one host: delay, jitter and loss by distance.

``model`` (pure: distance -> delay), ``delayline`` (pure: packets held until their time),
``tun`` + ``routing`` + ``daemon`` (the user-space path through a TUN device), ``netem`` (the
kernel path, generated tc configuration), ``probe`` (which path this kernel offers) and
``emulator`` (what ``slicemesh sim`` starts and stops). docs/wan.md has the whole story.
"""
