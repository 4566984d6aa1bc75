"""Customer lifetime value: expected spend over the next ``horizon_days``, updated online.

The method is the usual "buy till you die" (BTYD) pair, simplified to closed forms cheap
enough to evaluate on every event, in the RFM definitions of
:func:`~streamproc.state.profile.rfm_summary` (``frequency`` x = repeat purchase days,
``recency`` t_x = days from the first to the last purchase, ``T`` = days since the first):

1. **How many purchases** (BG/NBD, Fader, Hardie & Lee 2005). While "alive", a customer buys
   at a Poisson rate lambda, lambda ~ Gamma(r, alpha) across customers; after each purchase
   they may drop out with probability p, p ~ Beta(a, b). Then, exactly,

   * ``P(alive) = 1 / (1 + [x > 0] * a / (b + x - 1) * ((alpha + T) / (alpha + t_x))**(r + x))``
     (a long silence after frequent buying makes dropping out likely);
   * given alive, lambda's posterior mean is ``(r + x) / (alpha + T)``.

   The exact expected count over the horizon needs a hypergeometric function; instead, with
   ``n = (r + x) / (alpha + T) * horizon`` purchases if nobody dropped out and the posterior
   mean dropout ``q = a / (a + b + x)``, the expected count is approximated by
   ``P(alive) * (1 - (1 - q)**n) / q``: each further purchase happens only if the customer
   survived the previous ones. This is at most ``n`` and, like the exact form, grows with x
   and t_x and falls with T.

2. **How much per purchase** (Gamma-Gamma, Fader, Hardie & Lee 2005b). Its conditional
   expectation is a credibility-weighted mean: the customer's average order value, shrunk
   toward the population's, ``(orders * own + k * population) / (orders + k)``. ``k`` (in
   orders) is a parameter; the population mean is learnt online.

Population parameters: a, b (dropout) are fixed priors (defaults close to published fits);
r and alpha are estimated online by moment matching on the observed daily purchase rates
x / T of customers with ``T >= min_age_days``: ``mean = r / alpha`` and
``var = r / alpha**2`` once the Poisson noise ``mean(rate / T)`` is subtracted. The moments are
over the calls to :meth:`LifetimeValue.learn_one`, so call it about once per customer and
period (for example on a customer's first event of each day), not on every purchase, or the
frequent buyers dominate; ``weight`` lets a caller correct a known sampling bias. Until
``min_weight`` customers' worth has been seen, the priors hold.

>>> ltv = LifetimeValue()
>>> loyal = {"frequency": 6, "recency": 80, "T": 90}
>>> lapsed = {"frequency": 6, "recency": 20, "T": 90}
>>> ltv.predict_value(loyal, 350.0, 7) > ltv.predict_value(lapsed, 350.0, 7)
True
>>> round(ltv.p_alive(lapsed), 2)
0.04
"""

from __future__ import annotations

from typing import Any


class LifetimeValue:
    """BG/NBD-style expected purchases times shrunk order value; see the module docstring."""

    def __init__(
        self,
        r: float = 0.25,
        alpha: float = 30.0,
        a: float = 0.8,
        b: float = 2.4,
        shrinkage: float = 2.0,
        mean_order_value: float = 50.0,
        min_age_days: int = 7,
        min_weight: float = 50.0,
    ) -> None:
        self.r = r
        self.alpha = alpha
        self.a = a
        self.b = b
        self.shrinkage = shrinkage
        self.mean_order_value = mean_order_value
        self.min_age_days = min_age_days
        self.min_weight = min_weight
        # weighted running moments of daily rates (Welford / West), and of order values
        self._w = self._mean = self._m2 = self._noise = 0.0
        self._orders = 0
        self._order_mean = 0.0

    # -- population parameters ------------------------------------------------------------------

    def learn_one(
        self, rfm: dict[str, Any], total: float, orders: int, weight: float = 1.0
    ) -> None:
        """Update the population's parameters with one customer's current state."""
        if orders > 0 and total > 0:
            # a running mean of the customers' average order value, one term per call
            self._orders += 1
            self._order_mean += (total / orders - self._order_mean) / self._orders
        t = rfm.get("T", 0)
        if t < self.min_age_days:
            return
        x = rfm["frequency"]
        rate = x / t
        self._w += weight
        delta = rate - self._mean
        self._mean += weight / self._w * delta
        self._m2 += weight * delta * (rate - self._mean)
        self._noise += weight / self._w * (rate / t - self._noise)

    @property
    def params(self) -> dict[str, float]:
        """(r, alpha, a, b, mean order value) in use: learnt where enough data, else the priors."""
        r, alpha = self.r, self.alpha
        if self._w >= self.min_weight and self._mean > 0:
            var = self._m2 / self._w - self._noise
            if var > 0:
                r, alpha = self._mean**2 / var, self._mean / var
        mov = self._order_mean if self._orders >= self.min_weight else self.mean_order_value
        return {"r": r, "alpha": alpha, "a": self.a, "b": self.b, "mean_order_value": mov}

    # -- predictions ----------------------------------------------------------------------------

    def p_alive(self, rfm: dict[str, Any], params: dict[str, float] | None = None) -> float:
        """P(the customer has not dropped out) given frequency, recency and T (``params``:
        :attr:`params` taken once, by a caller predicting many times with a fixed model)."""
        x = rfm["frequency"]
        if x <= 0:
            return 1.0  # BG/NBD: no repeat purchase yet, no evidence of dropping out
        p = params or self.params
        ratio = ((p["alpha"] + rfm["T"]) / (p["alpha"] + rfm["recency"])) ** (p["r"] + x)
        return float(1.0 / (1.0 + p["a"] / (p["b"] + x - 1) * ratio))

    def expected_purchases(self, rfm: dict[str, Any], horizon_days: float = 365,
                           params: dict[str, float] | None = None) -> float:
        """Expected purchase days in the next ``horizon_days`` (see the module docstring)."""
        p = params or self.params
        x = rfm["frequency"]
        n = (p["r"] + x) / (p["alpha"] + rfm["T"]) * horizon_days
        q = p["a"] / (p["a"] + p["b"] + x)
        return float(self.p_alive(rfm, p) * (1.0 - (1.0 - q) ** n) / q)

    def expected_order_value(self, total: float, orders: int,
                             params: dict[str, float] | None = None) -> float:
        """The customer's mean order value shrunk toward the population's (Gamma-Gamma style)."""
        population = (params or self.params)["mean_order_value"]
        if orders <= 0:
            return population
        return (total + self.shrinkage * population) / (orders + self.shrinkage)

    def predict_value(
        self, rfm: dict[str, Any] | None, total: float, orders: int, horizon_days: float = 365,
        params: dict[str, float] | None = None,
    ) -> float:
        """Expected spend over the next ``horizon_days``; 0 for a customer who never bought.

        ``params``: :attr:`params`, taken once by a caller that predicts with a model it does
        not train (the scorer, once per served version): the same floats, a third of the cost.
        """
        if rfm is None or orders <= 0:
            return 0.0
        p = params or self.params
        value = self.expected_purchases(rfm, horizon_days, p) * self.expected_order_value(
            total, orders, p
        )
        return round(value, 2)


def predict_value(
    rfm: dict[str, Any] | None, total: float, orders: int, horizon_days: float = 365
) -> float:
    """:meth:`LifetimeValue.predict_value` with the prior parameters."""
    return _DEFAULT.predict_value(rfm, total, orders, horizon_days)


_DEFAULT = LifetimeValue()
