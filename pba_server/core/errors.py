"""Domain errors and their stable fault codes.

Every error a client can cause is one of these classes. The API adapters
translate them: SOAP puts ``code`` in faultcode and a typed ``PbaFault``
detail; XML-RPC puts ``number`` in faultCode and ``"<code>: <message>"`` in
faultString. Codes and numbers never change once released.
"""

from __future__ import annotations


class PbaError(Exception):
    code = "Server.Internal"
    number = 5000
    http_status = 500

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class ValidationError(PbaError):
    code = "Client.Validation"
    number = 4001
    http_status = 400

    def __init__(self, field: str | None, message: str) -> None:
        text = f"{field}: {message}" if field else message
        super().__init__(text, field=field)


class MalformedRequest(PbaError):
    code = "Client.MalformedRequest"
    number = 4002
    http_status = 400


class RequestTooLarge(PbaError):
    code = "Client.RequestTooLarge"
    number = 4003
    http_status = 413


class RequestTooComplex(PbaError):
    """The XML is within the size cap but over a structural limit (attributes,
    namespace declarations, text size): refused before it is parsed."""

    code = "Client.RequestTooComplex"
    number = 4005
    http_status = 400


class TooManyRequests(PbaError):
    """More unauthenticated requests in progress from this address than allowed."""

    code = "Client.TooManyRequests"
    number = 4290
    http_status = 429


class UnknownOperation(PbaError):
    code = "Client.UnknownOperation"
    number = 4004
    http_status = 400


class AuthFailed(PbaError):
    code = "Client.AuthFailed"
    number = 4010
    http_status = 401


class TooManyAttempts(PbaError):
    code = "Client.TooManyAttempts"
    number = 4011
    http_status = 429


class Forbidden(PbaError):
    code = "Client.Forbidden"
    number = 4030
    http_status = 403


class OperatorSetting(Forbidden):
    """Only the provider's administrators (the operator) may set this: a plugin
    setting naming a program, file, host, port or URL, or a plugin that runs
    programs or writes files."""

    code = "Client.OperatorSetting"
    number = 4031
    http_status = 403


class NotFound(PbaError):
    code = "Client.NotFound"
    number = 4040
    http_status = 404


class Conflict(PbaError):
    code = "Client.Conflict"
    number = 4090
    http_status = 409


class InvalidState(PbaError):
    """The object exists but its state does not allow the operation."""

    code = "Client.InvalidState"
    number = 4091
    http_status = 409


class CreditLimitExceeded(PbaError):
    code = "Client.CreditLimitExceeded"
    number = 4020
    http_status = 402


class PaymentDeclined(PbaError):
    """The gateway declined a charge; the message starts with its reason code."""

    code = "Client.PaymentDeclined"
    number = 4021
    http_status = 402

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}" if message != reason else reason)
        self.reason = reason


class InternalError(PbaError):
    code = "Server.Internal"
    number = 5000
    http_status = 500


class Unavailable(PbaError):
    code = "Server.Unavailable"
    number = 5030
    http_status = 503


class Busy(PbaError):
    """The call met a deadlock or serialization failure (or a locked SQLite
    database) on every attempt: nothing was written; try again later."""

    code = "Server.Busy"
    number = 5031
    http_status = 503


ALL_ERRORS: tuple[type[PbaError], ...] = (
    ValidationError,
    MalformedRequest,
    RequestTooLarge,
    RequestTooComplex,
    UnknownOperation,
    AuthFailed,
    TooManyAttempts,
    TooManyRequests,
    Forbidden,
    OperatorSetting,
    NotFound,
    Conflict,
    InvalidState,
    CreditLimitExceeded,
    PaymentDeclined,
    InternalError,
    Unavailable,
    Busy,
)
