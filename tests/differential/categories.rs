//! The statements of each category of the differential test, built by the generator.

use super::{money, Generator, Sql, Stmt, COUNTRIES, INITIAL_CUSTOMERS, STATUSES};

impl Generator {
    pub(super) fn customer_cols(&mut self) -> &'static str {
        self.rng.pick(&[
            "*",
            "id, name",
            "id, balance, created",
            "name, score, country",
            "id, score",
        ])
    }

    pub(super) fn point_eq(&mut self, s: &mut Stmt) {
        let q = &mut s.sql;
        if self.rng.chance(60) {
            let cols = self.customer_cols();
            let id = self.customer_id();
            q.raw(&format!("SELECT {cols} FROM customers WHERE id = "))
                .int(id);
        } else {
            let c = self.customer_id();
            q.raw("SELECT id, amount, qty, status, placed FROM orders WHERE customer_id = ")
                .int(c);
            if self.rng.chance(30) {
                q.raw(" AND ");
                self.order_cond(q, "");
            }
        }
    }

    pub(super) fn point_in(&mut self, s: &mut Stmt) {
        let n = self.rng.range(1, 6) as usize;
        let ids = self.customer_ids(n);
        let q = &mut s.sql;
        if self.rng.chance(60) {
            let cols = self.customer_cols();
            q.raw(&format!("SELECT {cols} FROM customers WHERE id IN ("))
                .ints(&ids)
                .raw(")");
        } else {
            q.raw("SELECT id, customer_id, amount FROM orders WHERE customer_id IN (")
                .ints(&ids)
                .raw(")");
        }
    }

    pub(super) fn range_plain(&mut self, s: &mut Stmt) {
        let q = &mut s.sql;
        match self.rng.range(0, 3) {
            0 | 1 => {
                let cols = self.customer_cols();
                q.raw(&format!("SELECT {cols} FROM customers WHERE "));
                self.customer_cond(q, "");
                if self.rng.chance(30) {
                    q.raw(" AND ");
                    self.customer_cond(q, "");
                }
            }
            2 => {
                q.raw("SELECT * FROM orders WHERE ");
                self.order_cond(q, "");
            }
            _ => {
                q.raw("SELECT code, name, population FROM countries WHERE population > ")
                    .int(self.rng.range(0, 400));
            }
        }
    }

    /// Optional WHERE on customers.
    pub(super) fn maybe_where_customers(&mut self, q: &mut Sql) {
        if self.rng.chance(50) {
            q.raw(" WHERE ");
            self.customer_cond(q, "");
        }
    }

    pub(super) fn maybe_where_orders(&mut self, q: &mut Sql) {
        if self.rng.chance(50) {
            q.raw(" WHERE ");
            self.order_cond(q, "");
        }
    }

    pub(super) fn dir(&mut self) -> &'static str {
        self.rng.pick(&["", " DESC", " ASC"])
    }

    /// ORDER BY integer columns ending with the unique id, LIMIT n (no offset).
    pub(super) fn order_int_limit(&mut self, s: &mut Stmt) {
        s.ordered = true;
        let q = &mut s.sql;
        let (d1, d2) = (self.dir(), self.dir());
        if self.rng.chance(60) {
            q.raw("SELECT id, score, name, balance FROM customers");
            self.maybe_where_customers(q);
            if self.rng.chance(70) {
                q.raw(&format!(" ORDER BY score{d1}, id{d2}"));
            } else {
                q.raw(&format!(" ORDER BY id{d2}"));
            }
        } else {
            q.raw("SELECT id, customer_id, qty, amount FROM orders");
            self.maybe_where_orders(q);
            match self.rng.range(0, 2) {
                0 => q.raw(&format!(" ORDER BY qty{d1}, id{d2}")),
                1 => q.raw(&format!(" ORDER BY customer_id{d1}, id{d2}")),
                _ => q.raw(&format!(" ORDER BY qty{d1}, customer_id, id{d2}")),
            };
        }
        let n = self.rng.range(1, 25);
        q.raw(&format!(" LIMIT {n}"));
    }

    /// ORDER BY decimal or datetime columns (then the id), with or without LIMIT.
    pub(super) fn order_typed(&mut self, s: &mut Stmt) {
        s.ordered = true;
        let q = &mut s.sql;
        let (d1, d2) = (self.dir(), self.dir());
        if self.rng.chance(50) {
            let col = self.rng.pick(&["balance", "created"]);
            q.raw(&format!("SELECT id, {col}, score FROM customers"));
            self.maybe_where_customers(q);
            q.raw(&format!(" ORDER BY {col}{d1}, id{d2}"));
        } else {
            let col = self.rng.pick(&["amount", "placed"]);
            q.raw(&format!("SELECT id, customer_id, {col} FROM orders"));
            self.maybe_where_orders(q);
            q.raw(&format!(" ORDER BY {col}{d1}, id{d2}"));
        }
        if self.rng.chance(70) {
            let n = self.rng.range(1, 30);
            q.raw(&format!(" LIMIT {n}"));
        }
    }

    pub(super) fn count(&mut self, s: &mut Stmt) {
        let q = &mut s.sql;
        if self.rng.chance(60) {
            let list = self.rng.pick(&[
                "COUNT(*)",
                "COUNT(*) AS n",
                "COUNT(balance)",
                "COUNT(*), COUNT(score), COUNT(name)",
            ]);
            q.raw(&format!("SELECT {list} FROM customers"));
            self.maybe_where_customers(q);
        } else {
            let list = self
                .rng
                .pick(&["COUNT(*)", "COUNT(qty), COUNT(*)", "COUNT(status)"]);
            q.raw(&format!("SELECT {list} FROM orders"));
            if self.rng.chance(30) {
                q.raw(" WHERE customer_id = ").int(self.customer_id());
            } else {
                self.maybe_where_orders(q);
            }
        }
    }

    pub(super) fn dml_key(&mut self, s: &mut Stmt) {
        let op = self.rng.range(0, 6);
        let q = &mut s.sql;
        match op {
            0 => {
                let id = self.next_customer;
                self.next_customer += 1;
                let row = self.customer_row(id);
                q.raw(&format!(
                    "INSERT INTO customers (id, name, country, balance, score, created) VALUES {row}"
                ));
                s.writes = Some("customers");
            }
            1 => {
                let id = self.next_order;
                self.next_order += 1;
                let c = self.customer_id();
                let row = self.order_row(id, c);
                q.raw(&format!(
                    "INSERT INTO orders (id, customer_id, amount, qty, status, placed) VALUES {row}"
                ));
                s.writes = Some("orders");
            }
            2 => {
                let id = self.customer_id();
                let v = self.rng.range(-5, 5);
                let set = self.rng.pick(&[
                    "score = score + ",
                    "balance = balance * 2 + ",
                    "name = CONCAT(name, '-'), score = ",
                ]);
                q.raw(&format!("UPDATE customers SET {set}"))
                    .int(v)
                    .raw(" WHERE id = ")
                    .int(id);
                s.writes = Some("customers");
            }
            3 => {
                let (o, c) = self.some_order();
                let v = self.rng.pick(&STATUSES);
                q.raw("UPDATE orders SET status = ")
                    .lit(v)
                    .raw(", qty = qty + 1 WHERE customer_id = ")
                    .int(c)
                    .raw(" AND id = ")
                    .int(o);
                s.writes = Some("orders");
            }
            4 => {
                let id = self.customer_id();
                q.raw("DELETE FROM customers WHERE id = ").int(id);
                s.writes = Some("customers");
            }
            _ => {
                let (o, c) = self.some_order();
                q.raw("DELETE FROM orders WHERE customer_id = ")
                    .int(c)
                    .raw(" AND id = ")
                    .int(o);
                s.writes = Some("orders");
            }
        }
    }

    pub(super) fn order_offset(&mut self, s: &mut Stmt) {
        self.order_int_limit(s);
        let off = self.rng.range(0, 40);
        s.sql.raw(&format!(" OFFSET {off}"));
    }

    pub(super) fn order_ci_string(&mut self, s: &mut Stmt) {
        s.ordered = true;
        let q = &mut s.sql;
        let d1 = self.dir();
        if self.rng.chance(60) {
            q.raw("SELECT id, name, country FROM customers");
            self.maybe_where_customers(q);
            let col = self.rng.pick(&["name", "country"]);
            q.raw(&format!(" ORDER BY {col}{d1}, id"));
        } else {
            q.raw("SELECT id, status, amount FROM orders");
            self.maybe_where_orders(q);
            q.raw(&format!(" ORDER BY status{d1}, id"));
        }
        if self.rng.chance(70) {
            let n = self.rng.range(1, 30);
            q.raw(&format!(" LIMIT {n}"));
        }
    }

    pub(super) fn aggregate(&mut self, s: &mut Stmt) {
        let q = &mut s.sql;
        if self.rng.chance(55) {
            let list = self.rng.pick(&[
                "SUM(balance)",
                "SUM(score), AVG(score)",
                "MIN(score), MAX(score), MIN(balance), MAX(balance)",
                "MIN(created), MAX(created)",
                "AVG(balance), COUNT(*)",
                "MIN(name), MAX(name)",
                "SUM(score), MAX(id), MIN(id)",
            ]);
            s.fold_case = list.contains("name");
            q.raw(&format!("SELECT {list} FROM customers"));
            self.maybe_where_customers(q);
        } else {
            let list = self.rng.pick(&[
                "SUM(amount), SUM(qty)",
                "AVG(amount), AVG(qty)",
                "MIN(placed), MAX(amount), COUNT(*)",
                "MAX(status)",
            ]);
            s.fold_case = list.contains("status");
            q.raw(&format!("SELECT {list} FROM orders"));
            self.maybe_where_orders(q);
        }
    }

    pub(super) fn group_by(&mut self, s: &mut Stmt) {
        let q = &mut s.sql;
        match self.rng.range(0, 5) {
            0 => {
                s.fold_case = true;
                q.raw("SELECT country, COUNT(*), SUM(balance), MAX(score) FROM customers");
                self.maybe_where_customers(q);
                q.raw(" GROUP BY country");
                if self.rng.chance(50) {
                    q.raw(" HAVING COUNT(*) > ").int(self.rng.range(5, 40));
                }
            }
            1 => {
                q.raw("SELECT customer_id, COUNT(*), SUM(amount) FROM orders");
                self.maybe_where_orders(q);
                q.raw(" GROUP BY customer_id HAVING COUNT(*) > ")
                    .int(self.rng.range(1, 6));
            }
            2 => {
                s.fold_case = true;
                q.raw("SELECT status, COUNT(*), MAX(placed), AVG(amount) FROM orders");
                self.maybe_where_orders(q);
                q.raw(" GROUP BY status");
                if self.rng.chance(50) {
                    q.raw(" HAVING SUM(qty) > ").int(self.rng.range(10, 800));
                }
            }
            3 => {
                s.ordered = true;
                let d = self.dir();
                q.raw("SELECT score, COUNT(*) AS n, MIN(balance) FROM customers");
                self.maybe_where_customers(q);
                q.raw(&format!(" GROUP BY score ORDER BY score{d}"));
                if self.rng.chance(50) {
                    q.raw(&format!(" LIMIT {}", self.rng.range(1, 20)));
                }
            }
            4 => {
                s.ordered = true;
                q.raw("SELECT qty, COUNT(*) AS n, SUM(amount) AS total FROM orders");
                self.maybe_where_orders(q);
                q.raw(" GROUP BY qty ORDER BY n DESC, qty LIMIT ")
                    .raw(&self.rng.range(1, 8).to_string());
            }
            _ => {
                s.fold_case = true;
                q.raw("SELECT name, COUNT(*) FROM customers GROUP BY name HAVING COUNT(*) >= ")
                    .int(self.rng.range(1, 8));
            }
        }
    }

    pub(super) fn distinct(&mut self, s: &mut Stmt) {
        let q = &mut s.sql;
        match self.rng.range(0, 5) {
            0 => {
                s.fold_case = true;
                q.raw("SELECT DISTINCT country FROM customers");
                self.maybe_where_customers(q);
            }
            1 => {
                q.raw("SELECT DISTINCT score FROM customers");
                self.maybe_where_customers(q);
            }
            2 => {
                q.raw("SELECT DISTINCT customer_id FROM orders");
                self.maybe_where_orders(q);
            }
            3 => {
                q.raw("SELECT COUNT(DISTINCT status), COUNT(DISTINCT qty) FROM orders");
                self.maybe_where_orders(q);
            }
            4 => {
                s.fold_case = true;
                s.ordered = true;
                q.raw("SELECT DISTINCT status FROM orders ORDER BY status LIMIT ")
                    .raw(&self.rng.range(1, 5).to_string());
            }
            _ => {
                s.ordered = true;
                q.raw("SELECT DISTINCT qty FROM orders");
                self.maybe_where_orders(q);
                q.raw(" ORDER BY qty DESC");
            }
        }
    }

    pub(super) fn union_all(&mut self, s: &mut Stmt) {
        let q = &mut s.sql;
        q.raw("SELECT id FROM customers WHERE ");
        self.customer_cond(q, "");
        q.raw(" UNION ALL SELECT customer_id FROM orders WHERE ");
        self.order_cond(q, "");
    }

    pub(super) fn join_cosharded(&mut self, s: &mut Stmt) {
        let q = &mut s.sql;
        match self.rng.range(0, 3) {
            0 => {
                q.raw(
                    "SELECT o.id, o.amount, c.name, c.score FROM orders o \
                     JOIN customers c ON o.customer_id = c.id WHERE ",
                );
                self.customer_cond(q, "c.");
            }
            1 => {
                q.raw(
                    "SELECT c.id, c.name, o.id, o.status FROM customers c \
                     JOIN orders o ON o.customer_id = c.id WHERE c.id = ",
                )
                .int(self.customer_id());
            }
            2 => {
                s.ordered = true;
                q.raw(
                    "SELECT o.id, o.amount, c.id, c.balance FROM orders o \
                     JOIN customers c ON c.id = o.customer_id WHERE ",
                );
                self.order_cond(q, "o.");
                let d = self.dir();
                q.raw(&format!(
                    " ORDER BY o.amount{d}, o.id LIMIT {}",
                    self.rng.range(1, 20)
                ));
            }
            _ => {
                q.raw(
                    "SELECT c.id, COUNT(o.id) AS n FROM customers c \
                     LEFT JOIN orders o ON o.customer_id = c.id GROUP BY c.id HAVING n > ",
                )
                .int(self.rng.range(2, 7));
            }
        }
    }

    pub(super) fn join_reference(&mut self, s: &mut Stmt) {
        let q = &mut s.sql;
        match self.rng.range(0, 3) {
            0 => {
                q.raw(
                    "SELECT c.id, c.name, k.name, k.region FROM customers c \
                     JOIN countries k ON c.country = k.code WHERE ",
                );
                self.customer_cond(q, "c.");
            }
            1 => {
                q.raw(
                    "SELECT c.id, k.population FROM customers c \
                     LEFT JOIN countries k ON k.code = c.country WHERE c.id IN (",
                )
                .ints(&self.customer_ids(4))
                .raw(")");
            }
            2 => {
                s.fold_case = true;
                q.raw(
                    "SELECT k.region, COUNT(*) FROM customers c \
                     JOIN countries k ON c.country = k.code GROUP BY k.region",
                );
            }
            _ => {
                q.raw(
                    "SELECT o.id, o.amount, k.name FROM orders o \
                     JOIN customers c ON o.customer_id = c.id \
                     JOIN countries k ON k.code = c.country WHERE ",
                );
                self.order_cond(q, "o.");
            }
        }
    }

    pub(super) fn dml_multi_insert(&mut self, s: &mut Stmt) {
        let n = self.rng.range(2, 6);
        let dup = self.rng.chance(10);
        let q = &mut s.sql;
        if self.rng.chance(50) {
            let mut rows = Vec::new();
            for i in 0..n {
                let id = if dup && i == n - 1 {
                    self.rng.range(1, self.next_customer - 1)
                } else {
                    self.next_customer += 1;
                    self.next_customer - 1
                };
                rows.push(self.customer_row(id));
            }
            q.raw(&format!(
                "INSERT INTO customers (id, name, country, balance, score, created) VALUES {}",
                rows.join(", ")
            ));
            s.writes = Some("customers");
        } else {
            let mut rows = Vec::new();
            for _ in 0..n {
                let id = self.next_order;
                self.next_order += 1;
                let c = self.customer_id();
                rows.push(self.order_row(id, c));
            }
            q.raw(&format!(
                "INSERT INTO orders (id, customer_id, amount, qty, status, placed) VALUES {}",
                rows.join(", ")
            ));
            s.writes = Some("orders");
        }
    }

    pub(super) fn dml_range(&mut self, s: &mut Stmt) {
        let q = &mut s.sql;
        match self.rng.range(0, 4) {
            0 => {
                let a = self.rng.range(0, 95);
                q.raw("UPDATE customers SET score = score + 1 WHERE score BETWEEN ")
                    .int(a)
                    .raw(" AND ")
                    .int(a + 3);
                s.writes = Some("customers");
            }
            1 => {
                let v = self.rng.pick(&STATUSES);
                q.raw("UPDATE orders SET status = ")
                    .lit(v)
                    .raw(" WHERE qty = ")
                    .int(self.rng.range(1, 10))
                    .raw(" AND amount > ")
                    .lit(&money(&mut self.rng, 300, 500));
                s.writes = Some("orders");
            }
            2 => {
                let a = self.rng.range(1, self.next_order);
                q.raw("DELETE FROM orders WHERE id BETWEEN ")
                    .int(a)
                    .raw(" AND ")
                    .int(a + 4);
                s.writes = Some("orders");
            }
            3 => {
                let ids = self.customer_ids(3);
                q.raw("DELETE FROM customers WHERE id IN (")
                    .ints(&ids)
                    .raw(")");
                s.writes = Some("customers");
            }
            _ => {
                let ids = self.customer_ids(4);
                q.raw("UPDATE customers SET balance = balance + 10 WHERE id IN (")
                    .ints(&ids)
                    .raw(")");
                s.writes = Some("customers");
            }
        }
    }

    pub(super) fn dml_reference(&mut self, s: &mut Stmt) {
        let q = &mut s.sql;
        s.writes = Some("countries");
        match self.rng.range(0, 2) {
            0 => {
                let n = self.next_country;
                self.next_country += 1;
                let code = format!(
                    "{}{}",
                    (b'q' + (n / 26 % 10) as u8) as char,
                    (b'a' + (n % 26) as u8) as char
                );
                q.raw("INSERT INTO countries (code, name, region, population) VALUES (")
                    .lit(&code)
                    .raw(", ")
                    .lit(&format!("Land {n}"))
                    .raw(", 'Nowhere', ")
                    .int(self.rng.range(1, 50))
                    .raw(")");
            }
            1 => {
                let code = COUNTRIES[self.rng.range(0, 7) as usize].0;
                q.raw("UPDATE countries SET population = population + 1 WHERE code = ")
                    .lit(code);
            }
            _ => {
                q.raw("DELETE FROM countries WHERE region = 'Nowhere' AND population < ")
                    .int(self.rng.range(1, 10));
            }
        }
    }

    /// ORDER BY written other ways: an alias, a qualified name, `SELECT *`.
    pub(super) fn order_variants(&mut self, s: &mut Stmt) {
        s.ordered = true;
        let q = &mut s.sql;
        let d = self.dir();
        match self.rng.range(0, 2) {
            0 => {
                q.raw("SELECT id AS i, score AS s FROM customers");
                self.maybe_where_customers(q);
                q.raw(&format!(" ORDER BY s{d}, i"));
            }
            1 => {
                q.raw("SELECT customers.id, customers.balance FROM customers");
                self.maybe_where_customers(q);
                q.raw(&format!(" ORDER BY customers.balance{d}, customers.id"));
            }
            _ => {
                q.raw("SELECT * FROM orders");
                self.maybe_where_orders(q);
                q.raw(&format!(" ORDER BY placed{d}, id"));
            }
        }
        if self.rng.chance(60) {
            q.raw(&format!(" LIMIT {}", self.rng.range(1, 20)));
        }
    }

    /// ORDER BY result column positions.
    pub(super) fn order_position(&mut self, s: &mut Stmt) {
        s.ordered = true;
        let q = &mut s.sql;
        let d = self.dir();
        q.raw("SELECT id, qty FROM orders");
        self.maybe_where_orders(q);
        q.raw(&format!(" ORDER BY 2{d}, 1"));
        if self.rng.chance(60) {
            q.raw(&format!(" LIMIT {}", self.rng.range(1, 20)));
        }
    }

    /// An INSERT of an existing key (1062 on both sides), then a read over every shard.
    pub(super) fn after_error(&mut self, s: &mut Stmt) {
        let id = self.rng.range(1, INITIAL_CUSTOMERS);
        let row = self.customer_row(id);
        s.sql.raw(&format!(
            "INSERT INTO customers (id, name, country, balance, score, created) VALUES {row}"
        ));
        s.writes = Some("customers");
        let mut next = Stmt {
            category: "after_error",
            sql: Sql::default(),
            prepared: false,
            ordered: false,
            fold_case: false,
            writes: None,
            unordered_limit: None,
        };
        next.sql.raw("SELECT COUNT(*) FROM customers WHERE ");
        self.customer_cond(&mut next.sql, "");
        self.queued = Some(next);
    }

    /// LIMIT without ORDER BY: any rows may come back; compared by count only (see the
    /// runner), since which rows is up to each server.
    pub(super) fn limit_no_order(&mut self, s: &mut Stmt) {
        let q = &mut s.sql;
        q.raw("SELECT id, name FROM customers");
        self.maybe_where_customers(q);
        let n = self.rng.range(1, 30);
        s.unordered_limit = Some((q.text.clone(), n as usize));
        q.raw(&format!(" LIMIT {n}"));
    }
}
