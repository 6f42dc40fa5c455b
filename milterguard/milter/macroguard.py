"""Refuse macro lookups that would crash libmilter.

libmilter (Debian 12: libmilter.so.1.0.1, sendmail 8.17) keeps each macro
packet (``D``) as a NULL-terminated list ``name, value, name, value, ...``.
``smfi_getsymval`` walks a list two entries at a time and tests for the end
only at even positions, so a packet with an odd number of strings makes the
lookup of any macro that is not there read past the list: a SIGSEGV that
kills the whole daemon (issue 12, finding 2). Postfix always sends pairs;
anyone else who can reach the milter socket can send an odd list.

libmilter offers no call to see the lists, so this module reads them where
libmilter keeps them, the per-connection ``SMFICTX`` struct, through
ctypes. Its layout is a fact of the library build, not an API, so it is
checked on every use before anything is dereferenced: the struct's
private-data slot must hold the very pymilter context object that points at
the struct, and each list's first entry must point one byte past the start
of its packet buffer (where libmilter split it). On any other libmilter
build the check fails, ``macro_lists_even`` answers None ("cannot tell")
and the adapter looks macros up unguarded, as before; the README's
Security section states that residual risk.

Only the adapter calls this; it imports no pymilter itself.
"""

from __future__ import annotations

import ctypes
import struct
from typing import Any

#: pymilter's context object: PyObject_HEAD, then the SMFICTX pointer.
_CTX_IN_PYOBJECT = object.__basicsize__
#: libmilter 1.0.1 (x86_64): offsets inside SMFICTX. Seven macro stages
#: (connect, helo, mail, rcpt, data, eom, eoh); per stage the split list,
#: then the packet buffer, then the requested-macro list, then the reply
#: string and the private data pointer.
_STAGES = 7
_WORD = ctypes.sizeof(ctypes.c_void_p)
_MAC_PTR = 80
_MAC_BUF = _MAC_PTR + _STAGES * _WORD
_PRIVDATA = _MAC_PTR + 3 * _STAGES * _WORD + _WORD
#: The 7 list pointers and the 7 buffer pointers, read in one call (this
#: runs five times per message: every ctypes call counts).
_SLOTS = struct.Struct(f"@{2 * _STAGES}P")
_POINTERS = ctypes.POINTER(ctypes.c_void_p)
#: A sane upper bound on strings per packet (Postfix sends a few dozen at
#: most); past it we stop counting and call the list unsafe.
_MAX_STRINGS = 4096


def _word(address: int) -> int:
    return ctypes.c_void_p.from_address(address).value or 0


def macro_lists_even(context: Any) -> bool | None:
    """True when every macro list libmilter holds for this connection has an
    even number of strings (lookups are safe), False when one is odd (a
    lookup of an absent macro would crash), None when the struct does not
    look like the layout we know (cannot tell).

    ``context`` is pymilter's per-connection object (``Milter.Base._ctx``).
    """
    kind = type(context)
    # Only pymilter's C object has the struct pointer there; a test's fake
    # context must never be read as one.
    if (kind.__module__, kind.__qualname__) != ("milter", "Context") \
            or kind.__basicsize__ < _CTX_IN_PYOBJECT + _WORD:
        return None
    ctx = _word(id(context) + _CTX_IN_PYOBJECT)
    if not ctx or _word(ctx + _PRIVDATA) != id(context):
        return None
    slots = _SLOTS.unpack(ctypes.string_at(ctx + _MAC_PTR, _SLOTS.size))
    for stage in range(_STAGES):
        strings, buffer = slots[stage], slots[_STAGES + stage]
        if not strings or not buffer:
            continue   # libmilter skips these too
        entries = ctypes.cast(strings, _POINTERS)
        if entries[0] != buffer + 1:
            return None
        count = 1
        while count < _MAX_STRINGS and entries[count]:
            count += 1
        if count % 2 or count >= _MAX_STRINGS:
            return False
    return True
