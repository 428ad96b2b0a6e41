"""st2 datastore access helpers shared by the actions and the sensor.

st2's key listing is paged: ``list_values(local=True, prefix=None, limit=None,
offset=None)`` returns at most ``api.max_page_size`` items (100 by default)
per call, whatever the number of keys, and some versions reject a call without
a ``limit`` (st2#5327). ``list_all`` pages through a prefix with an explicit
``limit`` and ``offset`` until a short page, so every caller sees every key.
"""
from typing import Any, List, Optional

# st2's default (and, for non-admin users, maximum) api.max_page_size.
PAGE_SIZE = 100


def list_all(datastore: Any, prefix: str, local: bool, page_size: int = PAGE_SIZE) -> List[Any]:
    """Every KeyValuePair whose name starts with ``prefix``, in the datastore's order.

    ``datastore`` is an st2 action or sensor service. Pages are requested with
    ``limit=page_size`` and a growing ``offset`` until a page comes back short.
    Each name is returned once: a key written by another process while paging
    may shift the pages, so a name seen twice is kept once (and one that slid
    behind the offset is seen on the next listing). A page adding no new name
    ends the listing, so a datastore that ignores ``limit``/``offset`` (and
    returns everything on every call) cannot make this loop forever. A
    service whose ``list_values`` takes no ``limit``/``offset`` at all (the
    upstream st2tests mock) gets one unpaged call.
    """
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    items: List[Any] = []
    names = set()
    offset = 0
    while True:
        try:
            page = list(datastore.list_values(local=local, prefix=prefix, limit=page_size,
                                              offset=offset) or [])
        except TypeError:  # a service without paging arguments (st2tests' mock): one call
            return list(datastore.list_values(local=local, prefix=prefix) or [])
        fresh = 0
        for item in page:
            name: Optional[str] = getattr(item, "name", None)
            if name is not None and name in names:
                continue
            names.add(name)
            items.append(item)
            fresh += 1
        if len(page) < page_size or not fresh:
            return items
        offset += len(page)
