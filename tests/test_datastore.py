"""Datastore helpers: listing every key under a prefix through st2's paged API."""
import pytest

from lib.datastore import PAGE_SIZE, list_all


class Pair:
    def __init__(self, name, value):
        self.name = name
        self.value = value


class PagedDatastore:
    """st2's list_values contract: sorted names, ``limit = limit or 100``, ``offset``."""

    def __init__(self, names, honours_offset=True, honours_limit=True):
        self.pairs = [Pair(n, str(i)) for i, n in enumerate(sorted(names))]
        self.honours_offset = honours_offset
        self.honours_limit = honours_limit
        self.calls = []

    def list_values(self, local=True, prefix=None, limit=None, offset=None):
        self.calls.append((limit, offset))
        found = [p for p in self.pairs if p.name.startswith(prefix or "")]
        if self.honours_offset:
            found = found[offset or 0:]
        if self.honours_limit:
            found = found[:limit or 100]
        return found


def test_pages_through_every_key_with_explicit_limit_and_offset():
    store = PagedDatastore(["p.{:04d}".format(n) for n in range(257)] + ["q.1"])
    items = list_all(store, "p.", local=False)
    assert [i.name for i in items] == ["p.{:04d}".format(n) for n in range(257)]
    assert store.calls == [(PAGE_SIZE, 0), (PAGE_SIZE, 100), (PAGE_SIZE, 200)]


def test_an_exact_multiple_of_the_page_size_ends_on_an_empty_page():
    store = PagedDatastore(["k{:03d}".format(n) for n in range(200)])
    assert len(list_all(store, "k", local=True)) == 200
    assert store.calls == [(100, 0), (100, 100), (100, 200)]


def test_nothing_found_is_one_call():
    store = PagedDatastore([])
    assert list_all(store, "k", local=True) == [] and store.calls == [(100, 0)]


def test_a_datastore_ignoring_limit_and_offset_returns_each_key_once_and_terminates():
    store = PagedDatastore(["k{:03d}".format(n) for n in range(150)], honours_offset=False, honours_limit=False)
    assert len(list_all(store, "k", local=True)) == 150
    assert len(store.calls) == 2


def test_a_datastore_ignoring_offset_cannot_loop_forever():
    store = PagedDatastore(["k{:03d}".format(n) for n in range(150)], honours_offset=False)
    assert len(list_all(store, "k", local=True, page_size=50)) == 50
    assert len(store.calls) == 2


def test_a_key_shifted_into_the_next_page_is_returned_once():
    store = PagedDatastore(["k{:03d}".format(n) for n in range(150)])
    real = store.list_values

    def inserting(**kwargs):
        page = real(**kwargs)
        if kwargs["offset"] == 0:  # another process writes a key sorting before the offset
            store.pairs.insert(0, Pair("k", "new"))
        return page
    store.list_values = inserting
    names = [i.name for i in list_all(store, "k", local=True)]
    assert len(names) == len(set(names)) == 150  # k099 came back on the second page, kept once


def test_page_size_must_be_positive():
    with pytest.raises(ValueError):
        list_all(PagedDatastore([]), "k", local=True, page_size=0)


def test_st2tests_mock_datastore_is_listed_completely():
    """st2tests' MockDatastoreService (and the stand-in) ignore limit/offset: still every key once."""
    from st2tests.mocks.datastore import MockDatastoreService

    store = MockDatastoreService(pack_name="p", class_name="C")
    for n in range(250):
        store.set_value("k{:03d}".format(n), str(n))
    assert [kv.value for kv in list_all(store, "k", local=True)] == [str(n) for n in range(250)]


def test_a_service_without_paging_arguments_gets_one_unpaged_call():
    class UnpagedMock:  # st2tests' MockDatastoreService.list_values(local=True, prefix=None)
        def __init__(self):
            self.calls = 0

        def list_values(self, local=True, prefix=None):
            self.calls += 1
            return [Pair("k1", "a"), Pair("k2", "b"), Pair("x", "c")][:2 if prefix == "k" else 3]

    store = UnpagedMock()
    assert [i.name for i in list_all(store, "k", local=True)] == ["k1", "k2"]
    assert store.calls == 1  # the paged call is refused by the signature before it runs
