"""
The MongoDB storage pool: the shared behaviours, its collections and its connection string.

Against the server in ``TSPACE_TEST_MONGODB_URI`` when that is set (each test
in a database of its own, dropped afterwards), else against mongomock's
in-process stand-in; the pytest header says which.
"""

import os
import uuid

import mongomock
import numpy as np
import pymongo
import pytest
from storage_support import make_episode, make_summary, PoolBehaviour, T0
from tspace_ros.storage import mongo_pool
from tspace_ros.storage import open_pool, PoolConfig, StorageError
from tspace_ros.storage.mongo_pool import key_id, redact, resolve_mongodb_uri

SERVER_URI = os.environ.get('TSPACE_TEST_MONGODB_URI', '')


@pytest.fixture
def mongo():
    """Yield (client, database name): a real server's or mongomock's; dropped afterwards."""
    client = (pymongo.MongoClient(SERVER_URI, serverSelectionTimeoutMS=5000) if SERVER_URI
              else mongomock.MongoClient())
    name = f'tspace_test_{uuid.uuid4().hex[:12]}'
    yield client, name
    client.drop_database(name)
    client.close()


def mongo_config(name: str, **config) -> PoolConfig:
    """Return a mongodb pool config for database ``name``."""
    return PoolConfig(backend='mongodb', mongodb_database=name, **config)


class TestMongoPool(PoolBehaviour):
    """Every shared pool behaviour, on the MongoDB backend."""

    @pytest.fixture(autouse=True)
    def _place(self, mongo):
        self.client, self.database = mongo

    def open_pool(self, **config):
        """Return a MongoDB pool on this test's database (the client stays open)."""
        return open_pool(mongo_config(self.database, **config), client=self.client)


def test_collections_as_tspace_used_them(mongo):
    """records: one document per step with meta; record_keys; episodes with transitions."""
    client, name = mongo
    spec = {'signals': ['velocity', 'thrust', 'brake'], 'action_shape': [4, 17]}
    good, bad = make_episode('V1', 'd1', T0, 4), make_episode('V1', 'd1', T0 + 5, 3)
    with open_pool(mongo_config(name, spec=spec), client=client) as pool:
        pool.append(good + bad)
        pool.end_episode(make_summary(good))
        pool.end_episode(make_summary(bad, valid=False))
        assert pool.stats()['timeseries'] is bool(SERVER_URI)
    database = client[name]
    assert {'records', 'record_keys', 'episodes'} <= set(database.list_collection_names())
    documents = list(database['records'].find({}, {'_id': 0}))
    assert len(documents) == 4                              # the discarded steps are gone
    document = documents[0]
    assert set(document['meta']) == {'vehicle', 'driver', 'episodestart', 'episode_start_ns',
                                     'spec'}
    assert document['meta']['spec'] == spec and document['meta']['vehicle'] == 'V1'
    assert document['meta']['episode_start_ns'] == T0
    assert 'timestamp' in document and len(document['state']) == len(good[0].state)
    assert database['record_keys'].count_documents({}) == 7   # discarded keys stay: no retry
    assert database['record_keys'].find_one({'_id': key_id('V1', 'd1', T0, 2)}) is not None
    valid = database['episodes'].find_one({'_id': key_id('V1', 'd1', T0)})
    assert valid['valid'] is True and valid['transitions_embedded'] is True
    assert [t['step_index'] for t in valid['transitions']] == [0, 1, 2, 3]
    np.testing.assert_array_equal(np.array(valid['transitions'][1]['state'], np.float32),
                                  good[1].state)
    tombstone = database['episodes'].find_one({'_id': key_id('V1', 'd1', T0 + 5)})
    assert tombstone['valid'] is False and 'transitions' not in tombstone


def test_keys_collection_keeps_two_writers_idempotent(mongo):
    """A second pool that has not seen a key in memory still finds it in record_keys."""
    client, name = mongo
    records = make_episode('V1', 'd1', T0, 6)
    first = open_pool(mongo_config(name), client=client)
    second = open_pool(mongo_config(name), client=client)
    assert first.append(records) == 6
    assert second.append(records[3:] + make_episode('V1', 'd1', T0, 8)[6:]) == 2
    assert second.stats()['duplicates_ignored'] == 3
    first.close()
    second.close()
    with open_pool(mongo_config(name), client=client) as pool:
        assert pool.stats()['records'] == 8
        assert client[name]['records'].count_documents({}) == 8


def test_key_without_record_is_cleaned_up_on_open(mongo):
    """A key left by a crash between the two inserts does not block the retry."""
    client, name = mongo
    records = make_episode('V1', 'd1', T0, 3)
    with open_pool(mongo_config(name), client=client) as pool:
        pool.append(records[:2])
    client[name]['record_keys'].insert_one({'_id': key_id('V1', 'd1', T0, 2),
                                            'e': key_id('V1', 'd1', T0)})
    with open_pool(mongo_config(name), client=client) as pool:
        assert pool.append(records) == 1
        assert pool.stats()['records'] == 3


def test_uri_from_environment_variable_then_secret_file(tmp_path):
    """The URI comes from the named variable, else the secret file; never from the YAML."""
    secret = tmp_path / 'mongodb_uri'
    secret.write_text('mongodb://reader:from-file@db.example:27017/\n')
    config = PoolConfig(backend='mongodb', mongodb_uri_env='MY_URI',
                        mongodb_uri_file=str(secret))
    assert resolve_mongodb_uri(config, {'MY_URI': 'mongodb://u:p@env:1/'}) == \
        'mongodb://u:p@env:1/'
    assert resolve_mongodb_uri(config, {}) == 'mongodb://reader:from-file@db.example:27017/'
    secret.write_text('  \n')
    with pytest.raises(StorageError, match='empty'):
        resolve_mongodb_uri(config, {})
    missing = PoolConfig(backend='mongodb', mongodb_uri_file=str(tmp_path / 'none'))
    with pytest.raises(StorageError, match='mongodb_uri_file'):
        resolve_mongodb_uri(missing, {})


def test_missing_uri_says_how_to_set_it(monkeypatch):
    """No variable and no file: StorageError naming both ways to give the URI."""
    monkeypatch.delenv('TSPACE_MONGODB_URI', raising=False)
    with pytest.raises(StorageError) as raised:
        open_pool(PoolConfig(backend='mongodb'))
    message = str(raised.value)
    assert 'TSPACE_MONGODB_URI' in message and 'mongodb_uri_file' in message
    assert 'export TSPACE_MONGODB_URI=' in message


def test_open_pool_connects_with_the_environment_uri(monkeypatch):
    """Without a client, open_pool connects to the URI from the environment variable."""
    used = []

    def factory(uri):
        used.append(uri)
        return mongomock.MongoClient()

    monkeypatch.setattr(mongo_pool, '_client_factory', factory)
    monkeypatch.setenv('TSPACE_MONGODB_URI', 'mongodb://trainer:s3cret@localhost:27017/')
    with open_pool(PoolConfig(backend='mongodb', mongodb_database='t')) as pool:
        pool.append(make_episode('V1', 'd1', T0, 2))
        assert pool.stats()['records'] == 2
    assert used == ['mongodb://trainer:s3cret@localhost:27017/']


def test_connection_errors_hide_the_password(monkeypatch):
    """A failing connection is a StorageError that shows the host but not the password."""
    def factory(uri):
        raise pymongo.errors.ConfigurationError(f'bad option in {uri}')

    monkeypatch.setattr(mongo_pool, '_client_factory', factory)
    monkeypatch.setenv('TSPACE_MONGODB_URI', 'mongodb://trainer:hunter%402@db.example:27017/')
    with pytest.raises(StorageError) as raised:
        open_pool(PoolConfig(backend='mongodb'))
    message = str(raised.value)
    assert 'db.example' in message and 'trainer' in message
    assert 'hunter' not in message
    assert redact('x mongodb://a:b@h/ y') == 'x mongodb://a:***@h/ y'
