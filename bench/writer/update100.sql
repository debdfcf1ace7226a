-- one UPDATE of 100 consecutive rows per transaction (owners unchanged)
\set lo random(1, 99901)
UPDATE t SET amount = amount + 1 WHERE id BETWEEN :lo AND :lo + 99;
