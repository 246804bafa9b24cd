"""Tenants: who a caller is, and the user ids it may touch.

A tenant is a namespace of user ids: tenant ``acme``'s user ``ana`` is stored as the user id
``acme:ana``, tenant ``blue``'s ``ana`` as ``blue:ana``, so the two never share a memory, a
search, a topic or a count. Tenant names cannot hold ``:``, so the first ``:`` of a stored id
always splits it the same way, whatever the user id holds. A store used without tenants
(the embedded SDK, ``latentmem serve --insecure-no-auth``) keeps plain user ids.

A ``Principal`` is what an API key grants: one tenant, optionally only some of its users,
optionally read-only, optionally admin (key management and store-wide stats and sleep).
Chosen over a ``tenant`` column in every table: the engine already isolates users
completely (its indexes, BM25 statistics, topics and caches are per user id), so a prefix
gives tenants that isolation with no change to either backend's schema or query plans.
Rejected: a store per tenant (a FAISS index and a database per tenant multiply memory and
connections, and a key would pick a store before it is checked).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from latentmem.errors import ForbiddenError, InvalidInputError
from latentmem.inputs import MAX_ID_CHARS, check_scope_value

SEPARATOR = ":"
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_USER = "default"


def check_tenant(name: object) -> str:
    if not isinstance(name, str) or not _TENANT.match(name):
        raise InvalidInputError(f"a tenant name is 1 to 64 letters, digits, '_', '.' or '-', "
                                f"starting with a letter or digit; found {name!r}")
    return name


@dataclass(frozen=True)
class Principal:
    tenant: str | None  # None: plain user ids (no tenants)
    users: frozenset[str] | None = None  # None: every user of the tenant
    read_only: bool = False
    admin: bool = False
    key_id: str | None = None

    # -- user ids --------------------------------------------------------------------------

    def inner(self, user_id: str) -> str:
        """The stored id of one of this tenant's users."""
        return user_id if self.tenant is None else f"{self.tenant}{SEPARATOR}{user_id}"

    def outer(self, stored: str) -> str:
        """The user id the caller knows, for a stored id this principal sees."""
        if self.tenant is None:
            return stored
        return stored.partition(SEPARATOR)[2]

    def sees(self, stored: str) -> bool:
        """Whether a memory of the stored user id is inside this principal's scope."""
        if self.tenant is not None:
            prefix = self.tenant + SEPARATOR
            if not stored.startswith(prefix):
                return False
            stored = stored[len(prefix):]
        return self.users is None or stored in self.users

    def user(self, given: object) -> str:
        """The stored user id for a request's ``user_id`` (None: the key's one user, or
        ``default``). A user outside the key's list is refused (403)."""
        if given is None:
            if self.users is not None and len(self.users) == 1:
                given = next(iter(self.users))
            elif self.users is not None:
                raise InvalidInputError(f"give a user_id: this key serves the users "
                                        f"{sorted(self.users)}")
            else:
                given = DEFAULT_USER
        limit = MAX_ID_CHARS - (0 if self.tenant is None else len(self.tenant) + 1)
        user = check_scope_value("user_id", given)
        assert user is not None
        if len(user) > limit:
            raise InvalidInputError(f"user_id is {len(user)} characters; the limit is {limit}")
        if self.users is not None and user not in self.users:
            raise ForbiddenError(f"this key may not act for the user {user!r}")
        return self.inner(user)

    def writable(self) -> None:
        if self.read_only:
            raise ForbiddenError("this key is read-only")

    def administrator(self) -> None:
        if not self.admin:
            raise ForbiddenError("only an admin key may do this")


#: Everything, with plain user ids: the embedded SDK and ``serve --insecure-no-auth``.
UNRESTRICTED = Principal(tenant=None, admin=True)
