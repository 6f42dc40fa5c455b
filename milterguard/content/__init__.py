"""What rules read: ``views`` (one cached list of texts per rule target) over
``decode`` (charsets, transfer encodings, RFC 2047, Content-* parameters),
``mime`` (the bounded MIME walk), ``htmltext`` (HTML as the reader sees it),
``urls`` and ``suffixes`` (links and registered domains); ``fold`` is the
form phrases and text are compared in."""
