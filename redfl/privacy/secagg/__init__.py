"""Secure aggregation: the server learns the sum of the clients' updates, not the updates.

The protocol is SecAgg+ (Bell, Bonawitz, Gascón, Lepoint, Raykova, "Secure Single-Server
Aggregation with (Poly)Logarithmic Overhead", CCS 2020), whose complete-graph case is
SecAgg (Bonawitz, Ivanov, Kreuter, Marcedone, McMahan, Patel, Ramage, Segal, Seth,
"Practical Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017). This
package is the protocol alone, as pure functions and small classes over picklable
messages: no network, no Ray. :class:`SecAggServer` runs where the sum is wanted,
:class:`SecAggClient` where each client's update is; :class:`LocalRound` runs both in one
process.

How it works. Each client encodes its weighted update as integers modulo ``2^m``
(:mod:`~redfl.privacy.secagg.quantize`) and adds masks: one pairwise mask per neighbour in
a ``k``-regular graph (:mod:`~redfl.privacy.secagg.graph`), seeded by an X25519 agreement
(:mod:`~redfl.privacy.secagg.keys`) and added by one side and subtracted by the other so
the pair cancels in the sum, and one self mask from a random seed. Before masking, each
client Shamir-shares (:mod:`~redfl.privacy.secagg.shamir`) its mask private key and its
self-mask seed among its neighbours, encrypted for each. After masking, the server asks
the survivors for the shares it needs: the self-mask seeds of the clients whose inputs it
has, and the mask keys of those who dropped after sharing (to remove the masks they left
in their neighbours' inputs). Masks expand from seeds with AES-CTR
(:mod:`~redfl.privacy.secagg.prg`).

Threat model. The server is honest but curious: it runs the protocol as written and
tries to learn from what it sees; some clients may collude with it (pool what they know).
Then the server, together with fewer than ``t`` colluding clients among any client's
neighbours, learns nothing about an honest client's update beyond the sum of the
survivors' updates (with the colluders' own inputs, which they know). What breaks it:

- ``t`` or more colluders among one client's neighbours: they hold enough shares to
  rebuild its self-mask seed and mask key, hence its update;
- a server that does not follow the protocol: it could tell some neighbours that a
  client dropped and others that it survived, and collect both its secrets. An honest
  client refuses to give both shares of the same neighbour; across clients, only the
  consistency round of the actively secure protocol (signatures, not implemented here)
  would stop it;
- survivors that fall apart into groups in the graph (the server would learn each
  group's sum): the server here checks connectivity before unmasking, and the default
  graph makes it hold except with negligible probability;
- the sum itself: with few survivors it says much about each of them
  (``min_survivors`` bounds how few), and nothing here hides who took part.

Parameters that matter (:class:`SecAggConfig`): ``neighbours`` k and ``threshold`` t
(chosen from the number of clients, the dropout and collusion fractions to withstand;
``k = n - 1`` is SecAgg), ``min_survivors``, and the encoding's ``clip``, ``bits``,
``modulus_bits`` and ``max_weight``, which set the precision and the largest sum.
Distributed differential privacy: :mod:`~redfl.privacy.secagg.dp`. The ``[secure_aggregation]``
table of a run: :class:`SecureAggregationConfig`.
"""

from redfl.privacy.secagg.client import SecAggClient
from redfl.privacy.secagg.config import STAGES, SecAggConfig, Stage
from redfl.privacy.secagg.dp import DistributedSkellam
from redfl.privacy.secagg.errors import (
    ClientRefusal,
    RoundFailed,
    SecAggError,
    ShareAuthenticationError,
)
from redfl.privacy.secagg.graph import choose_neighbourhood, harary_graph
from redfl.privacy.secagg.local import LocalRound
from redfl.privacy.secagg.messages import (
    EncryptedShare,
    KeyAdvertisement,
    MaskedInput,
    MaskedSum,
    NeighbourKeys,
    RoutedShares,
    SecAggResult,
    ShareBundle,
    UnmaskReply,
    UnmaskRequest,
)
from redfl.privacy.secagg.quantize import Layout, Quantizer, layout_of
from redfl.privacy.secagg.server import SecAggServer
from redfl.privacy.secagg.table import SecureAggregationConfig

__all__ = [
    "STAGES",
    "ClientRefusal",
    "DistributedSkellam",
    "EncryptedShare",
    "KeyAdvertisement",
    "Layout",
    "LocalRound",
    "MaskedInput",
    "MaskedSum",
    "NeighbourKeys",
    "Quantizer",
    "RoundFailed",
    "RoutedShares",
    "SecAggClient",
    "SecAggConfig",
    "SecAggError",
    "SecAggResult",
    "SecAggServer",
    "SecureAggregationConfig",
    "ShareAuthenticationError",
    "ShareBundle",
    "Stage",
    "UnmaskReply",
    "UnmaskRequest",
    "choose_neighbourhood",
    "harary_graph",
    "layout_of",
]
