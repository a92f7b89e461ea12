"""
The MongoDB pool: tspace's collections, written with journaled acknowledgement.

Collections in ``config.mongodb_database``:

- ``records``: one document per step, a time-series collection (timeField
  ``timestamp`` = the state stamp, metaField ``meta`` = vehicle, driver,
  episodestart and the observation spec, granularity ``seconds``). Where
  time-series collections cannot be created (mongomock, old servers) it is a
  plain collection, and ``stats()['timeseries']`` is False.
- ``record_keys``: ``_id`` = the natural key (JSON of vehicle, driver, episode
  start, step). Time-series collections take no unique index, so a key is
  inserted here first; a DuplicateKeyError means the record is stored already
  and it is skipped (idempotent retries, also across processes).
- ``episodes``: one document per episode summary (``_id`` = the JSON of
  vehicle, driver, episode start), with its transitions embedded when valid
  (what RDPG training loads); valid False is the episode's tombstone.

The connection string comes from the environment variable named by
``mongodb_uri_env`` or else from the secret file ``mongodb_uri_file``, never
from the YAML itself; error messages never show its password. Sampling uses
the same in-memory index as the parquet pool, loaded from ``records`` at open.
"""

import datetime
import json
import logging
import os
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple
import urllib.parse

import bson
import numpy as np
import pymongo
from pymongo.errors import BulkWriteError, PyMongoError
from pymongo.write_concern import WriteConcern
from tspace_ros.episodes.records import EpisodeSummaryRecord
from tspace_ros.storage.pool import (
    Batch, DISCARDED, Episode, PoolConfig, SCALAR_COLUMNS, StorageError, TransitionPool)

LOGGER = logging.getLogger('tspace_ros.storage.mongodb')

TIMESERIES = {'timeField': 'timestamp', 'metaField': 'meta', 'granularity': 'seconds'}
EMBED_LIMIT_BYTES = 12 * 1024 * 1024     # a document must stay under MongoDB's 16 MiB
_SUMMARY_FIELDS = ('vehicle_id', 'driver_id', 'episode_id', 'episode_start_ns', 'episode_end_ns',
                   'step_count', 'total_reward', 'energy_wh', 'distance_km', 'valid',
                   'first_policy_version', 'last_policy_version', 'timed_out_steps')
_STEP_FIELDS = ('step_index', 'action_row_start', 'action_row_count', 'reward', 'energy_wh',
                'done', 'timed_out', 'policy_version', 'state_stamp_ns', 'next_state_stamp_ns')


def _client_factory(uri: str):
    """Return a pymongo client for ``uri`` (replaced in tests)."""
    return pymongo.MongoClient(uri, serverSelectionTimeoutMS=10_000, tz_aware=True)


def redact(text: str, uri: str = '') -> str:
    """Return ``text`` with the password of any connection string (and of ``uri``) hidden."""
    text = re.sub(r'(mongodb(?:\+srv)?://[^:/@\s]*:)[^@\s]*@', r'\1***@', str(text))
    match = re.match(r'mongodb(?:\+srv)?://[^:/@]*:([^@]*)@', uri or '')
    if match and match.group(1):
        for secret in {match.group(1), urllib.parse.unquote(match.group(1))}:
            text = text.replace(secret, '***')
    return text


def resolve_mongodb_uri(config: PoolConfig, environ: Optional[Mapping[str, str]] = None) -> str:
    """
    Return the MongoDB connection string for ``config``.

    From the environment variable ``config.mongodb_uri_env`` when set, else from
    the file ``config.mongodb_uri_file``; StorageError saying how to set one
    when neither gives a URI.
    """
    environ = os.environ if environ is None else environ
    uri = environ.get(config.mongodb_uri_env, '').strip()
    if uri:
        return uri
    if config.mongodb_uri_file:
        try:
            with open(config.mongodb_uri_file, encoding='utf-8') as secret:
                uri = secret.read().strip()
        except OSError as err:
            raise StorageError(f'storage mongodb_uri_file: cannot read '
                               f'{config.mongodb_uri_file} ({err.strerror})') from err
        if not uri:
            raise StorageError(f'storage mongodb_uri_file: {config.mongodb_uri_file} is empty; '
                               'write the connection string into it')
        return uri
    raise StorageError(
        f'no MongoDB connection string: set the environment variable '
        f'{config.mongodb_uri_env} (export {config.mongodb_uri_env}='
        f'mongodb://USER:PASSWORD@HOST:27017/) or set storage mongodb_uri_file to the path '
        'of a file that holds it; the URI never goes in the YAML')


def key_id(vehicle: str, driver: str, start_ns: int, step: Optional[int] = None) -> str:
    """Return the ``_id`` of a transition key (or, without step, of an episode)."""
    parts = [vehicle, driver, int(start_ns)] + ([] if step is None else [int(step)])
    return json.dumps(parts, separators=(',', ':'))


def _utc(ns: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ns // 1_000_000_000, datetime.timezone.utc) + \
        datetime.timedelta(microseconds=(ns % 1_000_000_000) // 1000)


class MongoPool(TransitionPool):
    """The MongoDB transition pool (see the module docstring for the collections)."""

    backend = 'mongodb'

    def __init__(self, config: PoolConfig, client=None):
        super().__init__(config)
        self._owns_client = client is None
        uri = ''
        if client is None:
            uri = resolve_mongodb_uri(config)
            try:
                client = _client_factory(uri)
                client.admin.command('ping')
            except (PyMongoError, ValueError, TypeError) as err:
                raise StorageError(f'cannot connect to MongoDB at {redact(uri)}: '
                                   f'{redact(str(err), uri)}') from None
        self._client = client
        self._spec = dict(config.spec)
        concern = WriteConcern(w=1, j=True)
        try:
            database = client[config.mongodb_database]
            self._timeseries = self._ensure_records(database)
            self._records = database.get_collection('records', write_concern=concern)
            self._keys = database.get_collection('record_keys', write_concern=concern)
            self._episode_docs = database.get_collection('episodes', write_concern=concern)
            self._database = database
            self._keys.create_index([('e', pymongo.ASCENDING)])
            self._record_bytes = 0
            self._load()
        except PyMongoError as err:
            self._release()
            raise StorageError(f'MongoDB database {config.mongodb_database}: '
                               f'{redact(str(err), uri)}') from None

    # -- opening ---------------------------------------------------------------
    @staticmethod
    def _ensure_records(database) -> bool:
        """Create ``records`` (time-series where possible); return whether it is one."""
        if 'records' not in database.list_collection_names():
            try:
                database.create_collection('records', timeseries=dict(TIMESERIES))
                return True
            except (NotImplementedError, TypeError, PyMongoError) as err:
                LOGGER.info('records: no time-series collection here (%s); a plain one', err)
                if 'records' not in database.list_collection_names():
                    database.create_collection('records')
                return False
        try:
            info = list(database.list_collections(filter={'name': 'records'}))
        except (NotImplementedError, PyMongoError):
            return False
        return bool(info) and info[0].get('type') == 'timeseries'

    def _load(self) -> None:
        names = (*SCALAR_COLUMNS, 'state', 'next_state', 'action', 'vehicle', 'driver',
                 'episode_id')
        columns: Dict[str, list] = {name: [] for name in names}
        projection = {'_id': 0, 'meta.spec': 0}
        for doc in self._records.find({}, projection):
            meta = doc['meta']
            columns['vehicle'].append(meta['vehicle'])
            columns['driver'].append(meta['driver'])
            columns['episode_start_ns'].append(meta['episode_start_ns'])
            columns['episode_id'].append(doc['episode_id'])
            for name in ('state', 'next_state', 'action'):
                columns[name].append(doc[name])
            for name in _STEP_FIELDS:
                columns[name].append(doc[name])
            if not self._record_bytes:
                self._record_bytes = len(bson.encode(doc)) + 600
        if columns['step_index']:
            if (len({len(v) for v in columns['state']}) != 1
                    or len({len(v) for v in columns['action']}) != 1):
                raise StorageError(f'MongoDB {self._database.name}.records: transitions of '
                                   'different state or action sizes')
            cols = {name: np.array(columns[name], dtype) for name, dtype in SCALAR_COLUMNS.items()}
            for name in ('state', 'next_state', 'action'):
                cols[name] = np.array(columns[name], np.float32)
            batch = Batch(cols, columns['vehicle'], columns['driver'], columns['episode_id'])
            new, _, _ = self._index.plan(batch)
            self._index.insert(batch.take(np.flatnonzero(new)), compacted=True)
        for doc in self._episode_docs.find({}, {'transitions': 0}):
            summary = EpisodeSummaryRecord(**{name: doc[name] for name in _SUMMARY_FIELDS})
            episode = self._index.episodes.get(summary.key)
            if not (episode is not None and episode.status == DISCARDED and summary.valid):
                self._index.end_episode(summary)
        self._drop_orphan_keys()

    def _drop_orphan_keys(self) -> None:
        """Delete keys whose record never arrived (a crash between the two inserts)."""
        orphans, steps = [], {}
        for doc in self._keys.find({}, {'_id': 1}):
            vehicle, driver, start, step = json.loads(doc['_id'])
            episode = self._index.episodes.get((vehicle, driver, start))
            if episode is not None and episode.status == DISCARDED:
                continue                    # kept: retries of a discarded episode stay out
            if episode is not None and episode.key not in steps:
                steps[episode.key] = set(episode.steps.view().tolist())
            if episode is None or step not in steps[episode.key]:
                orphans.append(doc['_id'])
        if orphans:
            LOGGER.warning('record_keys: %d keys without a record (interrupted append); '
                           'deleted so that a retry stores them', len(orphans))
            self._keys.delete_many({'_id': {'$in': orphans}})

    # -- writing ---------------------------------------------------------------
    def _meta(self, vehicle: str, driver: str, start_ns: int) -> dict:
        return {'vehicle': vehicle, 'driver': driver, 'episodestart': _utc(start_ns),
                'episode_start_ns': start_ns, 'spec': self._spec}

    def _documents(self, batch: Batch) -> List[dict]:
        cols = batch.cols
        lists = {name: cols[name].tolist() for name in (*_STEP_FIELDS, 'state', 'next_state',
                                                        'action', 'episode_start_ns')}
        docs = []
        for i in range(len(batch)):
            doc = {'timestamp': _utc(lists['state_stamp_ns'][i]),
                   'meta': self._meta(batch.vehicle[i], batch.driver[i],
                                      lists['episode_start_ns'][i]),
                   'episode_id': batch.episode_id[i]}
            for name in (*_STEP_FIELDS, 'state', 'next_state', 'action'):
                doc[name] = lists[name][i]
            docs.append(doc)
        return docs

    def _persist_records(self, batch: Batch) -> np.ndarray:
        cols = batch.cols
        ids = [key_id(v, d, s, i) for v, d, s, i in zip(
            batch.vehicle, batch.driver, cols['episode_start_ns'].tolist(),
            cols['step_index'].tolist())]
        episodes = [key_id(v, d, s) for v, d, s in zip(
            batch.vehicle, batch.driver, cols['episode_start_ns'].tolist())]
        stored = np.ones(len(batch), bool)
        try:
            self._keys.insert_many([{'_id': k, 'e': e} for k, e in zip(ids, episodes)],
                                   ordered=False)
        except BulkWriteError as err:
            errors = err.details.get('writeErrors', [])
            others = [e for e in errors if e.get('code') != 11000]
            if others:
                raise StorageError(f'record_keys: {others[0].get("errmsg")}') from None
            stored[[e['index'] for e in errors]] = False
        except PyMongoError as err:
            raise StorageError(f'record_keys: {redact(str(err))}') from None
        docs = self._documents(batch.take(np.flatnonzero(stored)))
        if docs:
            try:
                self._records.insert_many(docs, ordered=True)
            except PyMongoError as err:
                inserted = [k for k, keep in zip(ids, stored) if keep]
                try:
                    self._keys.delete_many({'_id': {'$in': inserted}})
                except PyMongoError:
                    pass                    # cleaned up at the next open
                raise StorageError(f'records: {redact(str(err))}') from None
            if not self._record_bytes:
                self._record_bytes = len(bson.encode(docs[0])) + 600
        return stored

    def _summary_doc(self, summary: EpisodeSummaryRecord) -> dict:
        doc = {'_id': key_id(*summary.key), 'meta': self._meta(*summary.key)}
        for name in _SUMMARY_FIELDS:
            value = getattr(summary, name)
            doc[name] = value if isinstance(value, (str, bool)) else (
                int(value) if name not in ('total_reward', 'energy_wh', 'distance_km')
                else float(value))
        episode = self._index.episodes.get(summary.key)
        doc['transitions_embedded'] = False
        if summary.valid and episode is not None and episode.count:
            rows = episode.ordered_rows()
            state_size, action_size = self._index.dims
            if len(rows) * (2 * state_size + action_size + 20) * 12 < EMBED_LIMIT_BYTES:
                docs = self._documents(self._index.batch(rows))
                doc['transitions'] = [{k: v for k, v in d.items() if k != 'meta'}
                                      for d in docs]
                doc['transitions_embedded'] = True
        return doc

    def _persist_summary(self, summary: EpisodeSummaryRecord) -> None:
        try:
            self._episode_docs.replace_one({'_id': key_id(*summary.key)},
                                           self._summary_doc(summary), upsert=True)
            if not summary.valid:       # the tombstone is durable: now remove the steps
                self._records.delete_many(self._episode_filter(*summary.key))
        except PyMongoError as err:
            raise StorageError(f'episodes: {redact(str(err))}') from None

    @staticmethod
    def _episode_filter(vehicle: str, driver: str, start_ns: int) -> dict:
        return {'meta.vehicle': vehicle, 'meta.driver': driver,
                'meta.episode_start_ns': start_ns}

    def _remove_episodes(self, episodes: Sequence[Episode]) -> None:
        try:
            for episode in episodes:
                self._records.delete_many(self._episode_filter(*episode.key))
                self._keys.delete_many({'e': key_id(*episode.key)})
                self._episode_docs.delete_one({'_id': key_id(*episode.key)})
        except PyMongoError as err:
            raise StorageError(f'retention: {redact(str(err))}') from None

    # -- figures and closing -------------------------------------------------------
    def _bytes_on_disk(self) -> int:
        """Return the database's dataSize (logical size; estimated where unsupported)."""
        try:
            return int(self._database.command('dbStats')['dataSize'])
        except (NotImplementedError, PyMongoError, KeyError, TypeError):
            return (self._index.live * self._record_bytes
                    + len(self._index.episodes) * 1024)

    def _extra_stats(self) -> Dict[str, object]:
        return {'timeseries': self._timeseries, 'database': self._database.name}

    def _release(self) -> None:
        if self._owns_client and getattr(self, '_client', None) is not None:
            self._client.close()
        self._client = None

    def summary_transitions(self, vehicle_id: str, driver_id: str, episode_start_ns: int
                            ) -> Tuple[Optional[dict], List[dict]]:
        """Return (summary document, embedded transitions) of an episode as stored."""
        doc = self._episode_docs.find_one({'_id': key_id(vehicle_id, driver_id,
                                                         episode_start_ns)})
        if doc is None:
            return None, []
        return doc, doc.get('transitions', [])
