//! The expression language. Grammar, loosest first:
//!
//! ```text
//! condition := expr ["for" duration]        the whole condition held that long
//! expr      := and ("or" and)*
//! and       := not ("and" not)*
//! not       := "not" not | compare
//! compare   := sum [("<" | "<=" | ">" | ">=" | "==" | "!=") sum]
//! sum       := product (("+" | "-") product)*
//! product   := unary (("*" | "/") unary)*
//! unary     := "-" unary | primary
//! primary   := number | sensor | "(" expr ")" | call ["." field]
//! call      := name "(" sensor-or-asset ["," duration] ")" | "abs" "(" expr ")"
//! ```
//!
//! Sensors and assets are named by their spec id; an id with characters other than letters,
//! digits, `_` and `.` is written in double quotes (`"pump-1.speed"`). Functions: `mean`,
//! `min`, `max`, `rate` (per second) over a window; `stale(sensor)`; `anomaly(asset|sensor)`;
//! `forecast(sensor, horizon).p10|p50|p90`; `abs(expr)`. Durations: a number and `s`, `m`, `h` or `d`.
//! Only syntax here: whether a name exists is `file`'s business.

use std::ops::Range;

/// A parse error: the byte range of the expression it is about, and what was expected.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub span: Range<usize>,
    pub message: String,
}

/// A window function over a sensor's readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Mean,
    Min,
    Max,
    /// Change per second between the window's first and last reading.
    Rate,
    /// The largest reading less the smallest: 0 for a sensor stuck on one value.
    Spread,
    /// The reading-to-reading scatter (von Neumann's estimate of an instrument's noise: the
    /// root mean square of successive differences over √2), which a slow trend barely moves.
    Noise,
}

/// A quantile of a forecast band.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantile {
    P10,
    P50,
    P90,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

/// A name as written, with where it is (for messages).
#[derive(Debug, Clone, PartialEq)]
pub struct Name {
    pub text: String,
    pub span: Range<usize>,
}

/// The syntax tree of a condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Number(f64),
    /// A sensor's latest reading.
    Sensor(Name),
    Window {
        function: Window,
        sensor: Name,
        /// Nanoseconds.
        width: i64,
    },
    Stale(Name),
    Anomaly(Name),
    Forecast {
        sensor: Name,
        horizon: i64,
        quantile: Quantile,
    },
    Negate(Box<Expr>),
    /// The magnitude of a number: `abs(a - b) > 1` for a two-sided check.
    Abs(Box<Expr>),
    Arith(Arith, Box<Expr>, Box<Expr>),
    Compare(Compare, Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
}

/// A whole condition: the expression and how long it must hold (ns; 0: at once).
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub expr: Expr,
    pub hold: i64,
}

impl Expr {
    /// Every name the expression refers to, with what it must be (a sensor, or a sensor
    /// or asset for `anomaly`).
    pub fn names(&self, out: &mut Vec<(Name, bool)>) {
        match self {
            Expr::Number(_) => {}
            Expr::Sensor(n) | Expr::Stale(n) => out.push((n.clone(), false)),
            Expr::Window { sensor, .. } | Expr::Forecast { sensor, .. } => {
                out.push((sensor.clone(), false))
            }
            Expr::Anomaly(n) => out.push((n.clone(), true)),
            Expr::Negate(e) | Expr::Abs(e) | Expr::Not(e) => e.names(out),
            Expr::Arith(_, a, b) | Expr::Compare(_, a, b) | Expr::And(a, b) | Expr::Or(a, b) => {
                a.names(out);
                b.names(out);
            }
        }
    }

    /// Every forecast the expression reads: (sensor, horizon in ns).
    pub fn forecasts(&self, out: &mut Vec<(String, i64)>) {
        match self {
            Expr::Forecast {
                sensor, horizon, ..
            } => out.push((sensor.text.clone(), *horizon)),
            Expr::Negate(e) | Expr::Abs(e) | Expr::Not(e) => e.forecasts(out),
            Expr::Arith(_, a, b) | Expr::Compare(_, a, b) | Expr::And(a, b) | Expr::Or(a, b) => {
                a.forecasts(out);
                b.forecasts(out);
            }
            _ => {}
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    /// A duration in ns (a number glued to its unit).
    Duration(i64),
    Ident(String),
    Quoted(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
    Dot,
}

fn lex(text: &str) -> Result<Vec<(Token, Range<usize>)>, SyntaxError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let error = |message: String, end: usize| SyntaxError {
            span: start..end,
            message,
        };
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' => {
                out.push((Token::LParen, i..i + 1));
                i += 1;
            }
            b')' => {
                out.push((Token::RParen, i..i + 1));
                i += 1;
            }
            b',' => {
                out.push((Token::Comma, i..i + 1));
                i += 1;
            }
            b'"' => {
                let end = text[i + 1..]
                    .find('"')
                    .ok_or_else(|| error("a quoted name has no closing `\"`".into(), text.len()))?;
                out.push((
                    Token::Quoted(text[i + 1..i + 1 + end].to_owned()),
                    i..i + end + 2,
                ));
                i += end + 2;
            }
            b'0'..=b'9' => {
                while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                    i += 1;
                }
                // Exponent: 1e3, 2.5e-2.
                if i < bytes.len()
                    && (bytes[i] == b'e' || bytes[i] == b'E')
                    && bytes
                        .get(i + 1)
                        .is_some_and(|b| b.is_ascii_digit() || *b == b'-' || *b == b'+')
                {
                    i += 2;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                let number = &text[start..i];
                // A unit glued on makes it a duration.
                let unit_end = text[i..]
                    .find(|ch: char| !ch.is_ascii_alphabetic())
                    .map_or(text.len(), |n| i + n);
                if unit_end > i {
                    let nanos = doppel_core::time::parse_duration(&text[start..unit_end])
                        .map_err(|m| error(m, unit_end))?;
                    out.push((Token::Duration(nanos), start..unit_end));
                    i = unit_end;
                } else {
                    let value = number
                        .parse::<f64>()
                        .map_err(|_| error(format!("`{number}` is not a number"), i))?;
                    out.push((Token::Number(value), start..i));
                }
            }
            b'.' => {
                out.push((Token::Dot, i..i + 1));
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.')
                {
                    i += 1;
                }
                // A trailing dot belongs to what follows (`forecast(x, 2h).p90` is not here).
                out.push((Token::Ident(text[start..i].to_owned()), start..i));
            }
            _ => {
                let two = text.get(i..i + 2).unwrap_or("");
                let op = ["<=", ">=", "==", "!="]
                    .into_iter()
                    .find(|o| *o == two)
                    .or_else(|| {
                        ["<", ">", "+", "-", "*", "/"]
                            .into_iter()
                            .find(|o| o.as_bytes()[0] == c)
                    });
                match op {
                    Some(op) => {
                        out.push((Token::Op(op), i..i + op.len()));
                        i += op.len();
                    }
                    None => {
                        let ch = text[i..].chars().next().unwrap_or('?');
                        return Err(error(
                            format!(
                                "unexpected `{ch}`: a rule is made of sensors, numbers, comparisons, and/or/not and functions"
                            ),
                            i + ch.len_utf8(),
                        ));
                    }
                }
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(Token, Range<usize>)>,
    at: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(t, _)| t)
    }

    fn span(&self) -> Range<usize> {
        self.tokens
            .get(self.at)
            .map_or(self.end..self.end, |(_, s)| s.clone())
    }

    fn fail<T>(&self, message: impl Into<String>) -> Result<T, SyntaxError> {
        Err(SyntaxError {
            span: self.span(),
            message: message.into(),
        })
    }

    fn next(&mut self) -> Option<(Token, Range<usize>)> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Ident(w)) if w == word) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: Token, what: &str) -> Result<(), SyntaxError> {
        if self.peek() == Some(&token) {
            self.at += 1;
            Ok(())
        } else {
            self.fail(format!("expected {what}"))
        }
    }

    fn condition(&mut self) -> Result<Condition, SyntaxError> {
        let expr = self.or()?;
        let hold = if self.keyword("for") {
            match self.next() {
                Some((Token::Duration(d), _)) => d,
                _ => {
                    self.at -= 1;
                    return self.fail("expected a duration after `for`, such as `5m`");
                }
            }
        } else {
            0
        };
        if matches!(self.peek(), Some(Token::Duration(_))) {
            return self.fail("a duration belongs in a function (`mean(x, 10m)`) or after `for`");
        }
        if self.at < self.tokens.len() {
            return self
                .fail("expected `and`, `or`, a comparison or `for` here, or the end of the rule");
        }
        Ok(Condition { expr, hold })
    }

    fn or(&mut self) -> Result<Expr, SyntaxError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, SyntaxError> {
        let mut left = self.not()?;
        while self.keyword("and") {
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, SyntaxError> {
        if self.keyword("not") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.compare()
    }

    fn compare(&mut self) -> Result<Expr, SyntaxError> {
        let left = self.sum()?;
        let op = match self.peek() {
            Some(Token::Op("<")) => Compare::Lt,
            Some(Token::Op("<=")) => Compare::Le,
            Some(Token::Op(">")) => Compare::Gt,
            Some(Token::Op(">=")) => Compare::Ge,
            Some(Token::Op("==")) => Compare::Eq,
            Some(Token::Op("!=")) => Compare::Ne,
            _ => return Ok(left),
        };
        self.at += 1;
        Ok(Expr::Compare(op, Box::new(left), Box::new(self.sum()?)))
    }

    fn sum(&mut self) -> Result<Expr, SyntaxError> {
        let mut left = self.product()?;
        loop {
            let op = match self.peek() {
                Some(Token::Op("+")) => Arith::Add,
                Some(Token::Op("-")) => Arith::Sub,
                _ => return Ok(left),
            };
            self.at += 1;
            left = Expr::Arith(op, Box::new(left), Box::new(self.product()?));
        }
    }

    fn product(&mut self) -> Result<Expr, SyntaxError> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek() {
                Some(Token::Op("*")) => Arith::Mul,
                Some(Token::Op("/")) => Arith::Div,
                _ => return Ok(left),
            };
            self.at += 1;
            left = Expr::Arith(op, Box::new(left), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr, SyntaxError> {
        if self.peek() == Some(&Token::Op("-")) {
            self.at += 1;
            return Ok(Expr::Negate(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn name(&mut self, what: &str) -> Result<Name, SyntaxError> {
        match self.next() {
            Some((Token::Ident(text) | Token::Quoted(text), span)) => Ok(Name { text, span }),
            _ => {
                self.at -= 1;
                self.fail(format!("expected {what}"))
            }
        }
    }

    fn duration(&mut self, what: &str) -> Result<i64, SyntaxError> {
        match self.next() {
            Some((Token::Duration(d), _)) if d > 0 => Ok(d),
            _ => {
                self.at -= 1;
                self.fail(format!("expected {what}, such as `10m`"))
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, SyntaxError> {
        match self.next() {
            Some((Token::Number(v), _)) => Ok(Expr::Number(v)),
            Some((Token::Duration(_), _)) => {
                self.at -= 1;
                self.fail("a duration belongs in a function (`mean(x, 10m)`) or after `for`")
            }
            Some((Token::LParen, _)) => {
                let inner = self.or()?;
                self.expect(Token::RParen, "`)`")?;
                Ok(inner)
            }
            Some((Token::Quoted(text), span)) => Ok(Expr::Sensor(Name { text, span })),
            Some((Token::Ident(word), span)) => {
                if self.peek() != Some(&Token::LParen) {
                    if ["and", "or", "not", "for"].contains(&word.as_str()) {
                        self.at -= 1;
                        return self.fail(format!("expected a sensor or a number before `{word}`"));
                    }
                    return Ok(Expr::Sensor(Name { text: word, span }));
                }
                self.at += 1;
                let call = match word.as_str() {
                    "mean" | "min" | "max" | "rate" | "spread" | "noise" => {
                        let sensor = self.name("a sensor")?;
                        self.expect(Token::Comma, "`,` and a window, such as `mean(x, 10m)`")?;
                        let width = self.duration("a window")?;
                        let function = match word.as_str() {
                            "mean" => Window::Mean,
                            "min" => Window::Min,
                            "max" => Window::Max,
                            "spread" => Window::Spread,
                            "noise" => Window::Noise,
                            _ => Window::Rate,
                        };
                        Expr::Window {
                            function,
                            sensor,
                            width,
                        }
                    }
                    "abs" => Expr::Abs(Box::new(self.or()?)),
                    "stale" => Expr::Stale(self.name("a sensor")?),
                    "anomaly" => Expr::Anomaly(self.name("an asset or a sensor")?),
                    "forecast" => {
                        let sensor = self.name("a sensor")?;
                        self.expect(Token::Comma, "`,` and a horizon, such as `forecast(x, 2h)`")?;
                        let horizon = self.duration("a horizon")?;
                        self.expect(Token::RParen, "`)`")?;
                        let quantile = match self.next() {
                            Some((Token::Ident(q), _)) if q.starts_with('.') => q,
                            Some((Token::Dot, _)) => match self.next() {
                                Some((Token::Ident(q), _)) => q,
                                _ => {
                                    self.at -= 1;
                                    return self.fail("expected `p10`, `p50` or `p90` after `.`");
                                }
                            },
                            _ => {
                                self.at -= 1;
                                return self.fail(
                                    "a forecast is a band: write `forecast(x, 2h).p10`, `.p50` or `.p90`",
                                );
                            }
                        };
                        let quantile = match quantile.trim_start_matches('.') {
                            "p10" => Quantile::P10,
                            "p50" => Quantile::P50,
                            "p90" => Quantile::P90,
                            other => {
                                self.at -= 1;
                                return self
                                    .fail(format!("`{other}` is not a band: use p10, p50 or p90"));
                            }
                        };
                        return Ok(Expr::Forecast {
                            sensor,
                            horizon,
                            quantile,
                        });
                    }
                    other => {
                        return Err(SyntaxError {
                            span,
                            message: format!(
                                "unknown function `{other}`: use mean, min, max, rate, spread, noise, stale, anomaly, forecast or abs"
                            ),
                        });
                    }
                };
                self.expect(Token::RParen, "`)`")?;
                Ok(call)
            }
            Some((Token::RParen, _))
            | Some((Token::Comma, _))
            | Some((Token::Dot, _))
            | Some((Token::Op(_), _)) => {
                self.at -= 1;
                self.fail("expected a sensor, a number, a function or `(`")
            }
            None => {
                self.fail("the rule ends too early: expected a sensor, a number, a function or `(`")
            }
        }
    }
}

/// Parses a rule's condition (`when`).
pub fn parse_condition(text: &str) -> Result<Condition, SyntaxError> {
    let tokens = lex(text)?;
    if tokens.is_empty() {
        return Err(SyntaxError {
            span: 0..0,
            message: "the condition is empty".into(),
        });
    }
    let mut parser = Parser {
        tokens,
        at: 0,
        end: text.len(),
    };
    parser.condition()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issues_examples_parse() {
        let c = parse_condition("chw_supply_temp > 9.0 for 5m").unwrap();
        assert_eq!(c.hold, 300_000_000_000);
        assert!(matches!(c.expr, Expr::Compare(Compare::Gt, _, _)));
        let c = parse_condition("mean(pump3_vibration, 10m) > 7.1 or anomaly(pump3) > 0.99 for 3m")
            .unwrap();
        assert!(matches!(c.expr, Expr::Or(_, _)));
        let c = parse_condition("forecast(chw_supply_temp, 2h).p90 > 9.0").unwrap();
        let Expr::Compare(_, left, _) = c.expr else {
            panic!()
        };
        assert!(matches!(
            *left,
            Expr::Forecast {
                quantile: Quantile::P90,
                ..
            }
        ));
        let c = parse_condition("not stale(\"pump-1.speed\") and -x + 2 * y <= 1e3").unwrap();
        assert!(matches!(
            parse_condition("abs(x - y) > 1").unwrap().expr,
            Expr::Compare(Compare::Gt, left, _) if matches!(*left, Expr::Abs(_))
        ));
        let mut names = Vec::new();
        c.expr.names(&mut names);
        let names: Vec<&str> = names.iter().map(|(n, _)| n.text.as_str()).collect();
        assert_eq!(names, ["pump-1.speed", "x", "y"]);
    }

    #[test]
    fn errors_say_where_and_what() {
        for (text, at, says) in [
            ("x >", 3, "ends too early"),
            ("x > 9 for", 9, "duration after `for`"),
            ("mean(x) > 1", 6, "a window"),
            ("median(x, 1m) > 1", 0, "unknown function `median`"),
            ("x > 9 5m", 6, "a duration belongs"),
            ("x ? 1", 2, "unexpected `?`"),
            ("forecast(x, 1h) > 1", 16, "a forecast is a band"),
            ("x > 1 y", 6, "or the end of the rule"),
            ("x > 10q", 4, "unit"),
        ] {
            let e = parse_condition(text).unwrap_err();
            assert_eq!(e.span.start, at, "{text}: {e:?}");
            assert!(e.message.contains(says), "{text}: {}", e.message);
        }
    }
}
