"""The MTA side of the milter protocol, for replaying message files through a running milter.

``message`` reads a message file and its X-Replay-* envelope, ``client`` is
one milter connection, ``conversation`` plays one message through it the way
Postfix would (``replay_message``), ``files`` walks directories and replays
many, ``table`` prints the results; ``mailboxes`` reads files, trees, mbox
files and Maildirs as messages (for ``learn``).
"""
