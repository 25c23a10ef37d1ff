//! The seeded generator of the differential test: the schema, the initial rows and the
//! statements of every category. Everything comes from one seed, so a run is reproduced by
//! its seed (and statement count) alone.

use mysql_async::Value;

#[path = "categories.rs"]
mod categories;

/// SplitMix64: tiny, fast and good enough for test data; no dependency, stable across versions.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i64
    }

    /// True with probability `pct` percent.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.next_u64() % 100 < pct
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next_u64() % items.len() as u64) as usize]
    }
}

/// Tables as created on both sides: the same text through the router (keyspace `app`) and on
/// the reference database.
pub const SCHEMA: [&str; 3] = [
    "CREATE TABLE customers (id BIGINT NOT NULL PRIMARY KEY, \
     name VARCHAR(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NULL, \
     country CHAR(2) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NULL, \
     balance DECIMAL(12,2) NULL, score INT NULL, created DATETIME NULL, KEY (score))",
    "CREATE TABLE orders (id BIGINT NOT NULL PRIMARY KEY, customer_id BIGINT NOT NULL, \
     amount DECIMAL(10,2) NULL, qty INT NULL, \
     status VARCHAR(12) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NULL, \
     placed DATETIME NULL, KEY (customer_id))",
    "CREATE TABLE countries (code CHAR(2) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci \
     NOT NULL PRIMARY KEY, name VARCHAR(30) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci \
     NULL, region VARCHAR(12) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NULL, \
     population INT NULL)",
];

/// Names in mixed case: under `utf8mb4_general_ci` `alice`, `Alice` and `ALICE` are equal.
const NAMES: [&str; 16] = [
    "alice", "Alice", "ALICE", "bob", "Bob", "carol", "Carol", "dave", "Eve", "eve", "frank",
    "Grace", "heidi", "Ivan", "judy", "Mallory",
];
/// Country codes of customers: some in upper case (they still join `countries` under the
/// `_ci` collation), `zz` matches no country.
const CUSTOMER_COUNTRIES: [&str; 11] = [
    "fr", "FR", "de", "us", "US", "jp", "br", "in", "ca", "es", "zz",
];
const COUNTRIES: [(&str, &str, &str, i64); 8] = [
    ("fr", "France", "Europe", 68),
    ("de", "Germany", "Europe", 84),
    ("us", "United States", "Americas", 333),
    ("jp", "Japan", "Asia", 125),
    ("br", "Brazil", "AMERICAS", 216),
    ("in", "India", "asia", 1428),
    ("ca", "Canada", "Americas", 39),
    ("es", "Spain", "europe", 48),
];
const STATUSES: [&str; 7] = [
    "new",
    "NEW",
    "paid",
    "Paid",
    "shipped",
    "Shipped",
    "cancelled",
];

pub const INITIAL_CUSTOMERS: i64 = 300;
pub const INITIAL_ORDERS: i64 = 1200;

/// A SQL text built twice at once: with literals inlined (text protocol) and with `?`
/// placeholders and their parameters (prepared statements).
#[derive(Default, Clone)]
pub struct Sql {
    pub text: String,
    pub prep: String,
    pub params: Vec<Value>,
}

impl Sql {
    fn raw(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self.prep.push_str(s);
        self
    }

    fn int(&mut self, v: i64) -> &mut Self {
        self.text.push_str(&v.to_string());
        self.prep.push('?');
        self.params.push(Value::Int(v));
        self
    }

    /// A string, decimal or datetime literal (quoted in text, bytes as a parameter).
    fn lit(&mut self, v: &str) -> &mut Self {
        self.text.push_str(&quote(v));
        self.prep.push('?');
        self.params.push(Value::Bytes(v.as_bytes().to_vec()));
        self
    }

    fn ints(&mut self, vs: &[i64]) -> &mut Self {
        for (i, v) in vs.iter().enumerate() {
            if i > 0 {
                self.raw(", ");
            }
            self.int(*v);
        }
        self
    }
}

/// A SQL string literal.
pub fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// One generated statement.
pub struct Stmt {
    pub category: &'static str,
    pub sql: Sql,
    /// Run as a prepared statement (on both sides) instead of as text.
    pub prepared: bool,
    /// The ORDER BY fully determines the order of the rows (it ends with a unique column).
    pub ordered: bool,
    /// Compare strings case-folded: a `_ci` grouping or MIN/MAX may return any of the
    /// case variants of one value, on any server.
    pub fold_case: bool,
    /// A write: the table whose contents are compared afterwards.
    pub writes: Option<&'static str>,
    /// LIMIT without ORDER BY: the statement without its LIMIT and the limit. Any rows of
    /// that statement's result may come back, as many as the limit allows.
    pub unordered_limit: Option<(String, usize)>,
}

/// Every category the generator knows, with its weight.
pub const CATEGORIES: [(&str, u64); 22] = [
    ("point_eq", 10),
    ("point_in", 6),
    ("range_plain", 8),
    ("order_int_limit", 7),
    ("order_typed", 4),
    ("count", 5),
    ("dml_key", 10),
    ("order_offset", 4),
    ("order_ci_string", 3),
    ("aggregate", 5),
    ("group_by", 5),
    ("distinct", 4),
    ("union_all", 2),
    ("join_cosharded", 5),
    ("join_reference", 4),
    ("dml_multi_insert", 4),
    ("dml_range", 4),
    ("dml_reference", 2),
    ("limit_no_order", 2),
    ("after_error", 2),
    ("order_variants", 3),
    ("order_position", 2),
];

/// The generator's knowledge of the data: fresh keys, existing orders to target.
pub struct Generator {
    pub rng: Rng,
    next_customer: i64,
    next_order: i64,
    next_country: u32,
    /// (order id, customer id) of orders inserted so far (some may be deleted since).
    orders: Vec<(i64, i64)>,
    /// The second statement of a generated pair, returned next.
    queued: Option<Stmt>,
}

fn date(rng: &mut Rng) -> String {
    format!(
        "{}-{:02}-{:02} {:02}:{:02}:{:02}",
        rng.range(2020, 2025),
        rng.range(1, 12),
        rng.range(1, 28),
        rng.range(0, 23),
        rng.range(0, 59),
        rng.range(0, 59)
    )
}

fn money(rng: &mut Rng, lo: i64, hi: i64) -> String {
    let cents = rng.range(lo * 100, hi * 100);
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100)
}

/// A value or NULL (with probability `null_pct`), as a SQL literal.
fn or_null(rng: &mut Rng, null_pct: u64, v: String) -> String {
    if rng.chance(null_pct) {
        "NULL".into()
    } else {
        v
    }
}

impl Generator {
    pub fn new(seed: u64) -> Generator {
        Generator {
            rng: Rng::new(seed),
            next_customer: INITIAL_CUSTOMERS + 1,
            next_order: INITIAL_ORDERS + 1,
            next_country: 0,
            orders: Vec::new(),
            queued: None,
        }
    }

    /// The values of one customer row as SQL literals.
    pub fn customer_row(&mut self, id: i64) -> String {
        let r = &mut self.rng;
        let name = r.pick(&NAMES);
        let name = if r.chance(30) {
            format!("{name} {}", r.range(1, 20))
        } else {
            name.to_string()
        };
        let name = or_null(r, 5, quote(&name));
        let country = quote(r.pick(&CUSTOMER_COUNTRIES));
        let country = or_null(r, 5, country);
        let balance = money(r, -1000, 10000);
        let balance = or_null(r, 10, balance);
        let score = r.range(0, 100).to_string();
        let score = or_null(r, 10, score);
        let created = quote(&date(r));
        let created = or_null(r, 5, created);
        format!("({id}, {name}, {country}, {balance}, {score}, {created})")
    }

    /// The values of one order row as SQL literals.
    pub fn order_row(&mut self, id: i64, customer_id: i64) -> String {
        self.orders.push((id, customer_id));
        let r = &mut self.rng;
        let amount = money(r, 1, 500);
        let amount = or_null(r, 5, amount);
        let qty = r.range(1, 10).to_string();
        let qty = or_null(r, 10, qty);
        let status = quote(r.pick(&STATUSES));
        let status = or_null(r, 5, status);
        let placed = quote(&date(r));
        let placed = or_null(r, 5, placed);
        format!("({id}, {customer_id}, {amount}, {qty}, {status}, {placed})")
    }

    /// The initial rows: `INSERT` statements for the reference database, per table.
    pub fn initial_data(&mut self) -> Vec<(&'static str, Vec<String>)> {
        let customers: Vec<String> = (1..=INITIAL_CUSTOMERS)
            .map(|id| self.customer_row(id))
            .collect();
        let orders: Vec<String> = (1..=INITIAL_ORDERS)
            .map(|id| {
                // Some orders belong to no customer (ids past the last one).
                let c = self.rng.range(1, INITIAL_CUSTOMERS + 20);
                self.order_row(id, c)
            })
            .collect();
        let countries = COUNTRIES
            .iter()
            .map(|(c, n, r, p)| format!("({}, {}, {}, {p})", quote(c), quote(n), quote(r)))
            .collect();
        vec![
            ("customers", customers),
            ("orders", orders),
            ("countries", countries),
        ]
    }

    /// A customer id: mostly existing ones, sometimes one that does not exist.
    fn customer_id(&mut self) -> i64 {
        self.rng.range(1, self.next_customer + 10)
    }

    fn customer_ids(&mut self, n: usize) -> Vec<i64> {
        (0..n).map(|_| self.customer_id()).collect()
    }

    fn some_order(&mut self) -> (i64, i64) {
        if self.orders.is_empty() || self.rng.chance(5) {
            (self.next_order + 5, self.customer_id())
        } else {
            self.rng.pick(&self.orders)
        }
    }

    /// A condition on non-key columns of `customers` (alias prefix `p`, e.g. `c.`).
    fn customer_cond(&mut self, sql: &mut Sql, p: &str) {
        match self.rng.range(0, 7) {
            0 => {
                let a = self.rng.range(0, 90);
                let b = a + self.rng.range(0, 30);
                sql.raw(&format!("{p}score BETWEEN "))
                    .int(a)
                    .raw(" AND ")
                    .int(b);
            }
            1 => {
                let v = money(&mut self.rng, -500, 9000);
                sql.raw(&format!("{p}balance > ")).lit(&v);
            }
            2 => {
                let v = date(&mut self.rng);
                sql.raw(&format!("{p}created >= ")).lit(&v);
            }
            3 => {
                // Equal under the collation to every case variant.
                let v = self.rng.pick(&NAMES).to_lowercase();
                sql.raw(&format!("{p}name = ")).lit(&v);
            }
            4 => {
                let v = self.rng.pick(&CUSTOMER_COUNTRIES);
                sql.raw(&format!("{p}country = ")).lit(v);
            }
            5 => {
                let v = if self.rng.chance(50) {
                    "IS NULL"
                } else {
                    "IS NOT NULL"
                };
                let col = self.rng.pick(&["score", "balance", "name", "country"]);
                sql.raw(&format!("{p}{col} {v}"));
            }
            6 => {
                let a = self.rng.range(1, self.next_customer);
                sql.raw(&format!("{p}id > ")).int(a);
            }
            _ => {
                let v = format!("{}%", &self.rng.pick(&NAMES)[..1]);
                sql.raw(&format!("{p}name LIKE ")).lit(&v);
            }
        }
    }

    /// A condition on non-key columns of `orders`.
    fn order_cond(&mut self, sql: &mut Sql, p: &str) {
        match self.rng.range(0, 5) {
            0 => {
                let v = money(&mut self.rng, 1, 450);
                sql.raw(&format!("{p}amount < ")).lit(&v);
            }
            1 => {
                let v = self.rng.range(1, 10);
                sql.raw(&format!("{p}qty >= ")).int(v);
            }
            2 => {
                let v = self.rng.pick(&STATUSES).to_uppercase();
                sql.raw(&format!("{p}status = ")).lit(&v);
            }
            3 => {
                let v = date(&mut self.rng);
                sql.raw(&format!("{p}placed < ")).lit(&v);
            }
            4 => {
                let a = self.rng.range(1, self.next_order);
                sql.raw(&format!("{p}id BETWEEN "))
                    .int(a)
                    .raw(" AND ")
                    .int(a + 100);
            }
            _ => {
                sql.raw(&format!("{p}qty IS NULL"));
            }
        }
    }

    /// The next statement of one of `categories` (chosen by weight).
    pub fn statement(&mut self, categories: &[&'static str]) -> Stmt {
        if let Some(s) = self.queued.take() {
            return s;
        }
        let total: u64 = CATEGORIES
            .iter()
            .filter(|(c, _)| categories.contains(c))
            .map(|(_, w)| w)
            .sum();
        let mut roll = self.rng.next_u64() % total;
        let category = CATEGORIES
            .iter()
            .filter(|(c, _)| categories.contains(c))
            .find(|(_, w)| {
                if roll < *w {
                    true
                } else {
                    roll -= w;
                    false
                }
            })
            .map(|(c, _)| *c)
            .expect("a category");
        let mut s = Stmt {
            category,
            sql: Sql::default(),
            prepared: false,
            ordered: false,
            fold_case: false,
            writes: None,
            unordered_limit: None,
        };
        match category {
            "point_eq" => self.point_eq(&mut s),
            "point_in" => self.point_in(&mut s),
            "range_plain" => self.range_plain(&mut s),
            "order_int_limit" => self.order_int_limit(&mut s),
            "order_typed" => self.order_typed(&mut s),
            "count" => self.count(&mut s),
            "dml_key" => self.dml_key(&mut s),
            "order_offset" => self.order_offset(&mut s),
            "order_ci_string" => self.order_ci_string(&mut s),
            "aggregate" => self.aggregate(&mut s),
            "group_by" => self.group_by(&mut s),
            "distinct" => self.distinct(&mut s),
            "union_all" => self.union_all(&mut s),
            "join_cosharded" => self.join_cosharded(&mut s),
            "join_reference" => self.join_reference(&mut s),
            "dml_multi_insert" => self.dml_multi_insert(&mut s),
            "dml_range" => self.dml_range(&mut s),
            "dml_reference" => self.dml_reference(&mut s),
            "limit_no_order" => self.limit_no_order(&mut s),
            "after_error" => self.after_error(&mut s),
            "order_variants" => self.order_variants(&mut s),
            "order_position" => self.order_position(&mut s),
            other => unreachable!("category {other}"),
        }
        // A share of reads also goes through prepared statements.
        if s.writes.is_none()
            && s.unordered_limit.is_none()
            && !s.sql.params.is_empty()
            && self.rng.chance(30)
        {
            s.prepared = true;
        }
        s
    }
}
