"""Every feature's tables, imported in one place for migrations and tests."""

from __future__ import annotations

from pba_server.accounts import models as _accounts  # noqa: F401
from pba_server.billing import models as _billing  # noqa: F401
from pba_server.billing import run_models as _billing_run  # noqa: F401
from pba_server.catalog import models as _catalog  # noqa: F401
from pba_server.core import models as _core  # noqa: F401
from pba_server.core.db import Base
from pba_server.domains import models as _domains  # noqa: F401
from pba_server.dunning import models as _dunning  # noqa: F401
from pba_server.events import models as _events  # noqa: F401
from pba_server.orders import models as _orders  # noqa: F401
from pba_server.payments import models as _payments  # noqa: F401
from pba_server.provisioning import models as _provisioning  # noqa: F401
from pba_server.scheduler import models as _scheduler  # noqa: F401
from pba_server.subscriptions import models as _subscriptions  # noqa: F401
from pba_server.usage import models as _usage  # noqa: F401

metadata = Base.metadata
