//! The `hamlet` command line: train, check, db, eval.
//!
//! Every error is one line on stderr (`hamlet: <what went wrong>`) and a
//! non-zero exit; nothing is half-written (a training batch is one
//! transaction).
//!
//! Exit codes: `check` of one message: 0 spam, 1 ham, 2 unsure, 3 error
//! (bogofilter's convention, so existing procmail/maildrop recipes work).
//! Everything else: 0 success, 3 error; 2 is a usage error (from clap).

use crate::build::{self, Open};
use crate::classify::{Combining, Params, Score, Verdict};
use crate::config::Config;
use crate::engine::{Action, LearnOutcome};
use crate::eval::{self, TrainMode};
use crate::mailbox::{self, Entry};
use crate::store::{self, TokenStore};
use crate::tokenize::{Options, Tokenizer};
use crate::{Class, Error, Result};
pub mod client;

use clap::{Args, Parser, Subcommand};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(name = "hamlet", version, about = "A self-learning Bayesian mail filter", long_about = None)]
pub struct Cli {
    /// Token database (default: $HAMLET_DB, else $XDG_DATA_HOME/hamlet/hamlet.redb,
    /// else ~/.local/share/hamlet/hamlet.redb).
    #[arg(long, global = true, env = "HAMLET_DB")]
    pub db: Option<PathBuf>,
    /// Configuration file (see examples/hamlet.toml): its cutoffs and
    /// database hold for every command; --db and other flags override it.
    /// `client` and `imap-train` also read HAMLET_CONFIG.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

// One value per process, parsed once: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Learn messages as spam or ham (or unlearn them with --untrain).
    Train(TrainArgs),
    /// Classify messages: one from stdin, or FILEs in bulk.
    Check(CheckArgs),
    /// Inspect and maintain the database.
    #[command(subcommand)]
    Db(DbCommand),
    /// Evaluate on a labelled TREC index, in-process, on an empty model (or --start-from a dump).
    Eval(EvalArgs),
    /// Run the service: the HTTP API (see api.md) and, if configured, the
    /// SPAMD listener.
    Serve(ServeArgs),
    /// The spamc-like pipe command: check or learn the message on stdin
    /// through a running `hamlet serve`.
    Client(client::ClientArgs),
    /// Learn from IMAP folders: Junk as spam, ham folders as ham (accounts
    /// in the config's [[imap.account]]).
    ImapTrain(ImapArgs),
    /// Read a web console password on stdin (one line) and print the
    /// `password_hash = "..."` line for hamlet.toml's [ui].
    UiPassword,
}

#[derive(Args, Debug)]
pub struct ImapArgs {
    /// Keep running: IMAP IDLE on the spam folder where the server has it,
    /// else poll every [imap] poll_s seconds.
    #[arg(long)]
    pub watch: bool,
    /// Only this account.
    #[arg(long)]
    pub account: Option<String>,
    /// Stop after this many messages (the next run resumes).
    #[arg(long, conflicts_with = "watch")]
    pub max_messages: Option<u64>,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// HTTP listen address [default: 127.0.0.1:11333].
    #[arg(long)]
    pub http: Option<String>,
    /// Bearer token the learn endpoints require.
    #[arg(long, env = "HAMLET_LEARN_TOKEN", hide_env_values = true)]
    pub learn_token: Option<String>,
    /// SPAMD listen address: IP:PORT, or a UNIX socket path.
    #[arg(long)]
    pub spamd: Option<String>,
    /// Allow SPAMD TELL (spamc -L) from spamd_tell_from networks.
    #[arg(long)]
    pub spamd_allow_tell: bool,
    /// Postfix policy service address: IP:PORT (e.g. 127.0.0.1:10040), or
    /// a UNIX socket path.
    #[arg(long)]
    pub policy: Option<String>,
    /// Milter listen address (Postfix smtpd_milters, Sendmail): IP:PORT
    /// (e.g. 127.0.0.1:11332), or a UNIX socket path.
    #[arg(long)]
    pub milter: Option<String>,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Learn as spam.
    #[arg(long, conflicts_with = "ham")]
    pub spam: bool,
    /// Learn as ham.
    #[arg(long)]
    pub ham: bool,
    /// Remove the messages' training instead.
    #[arg(long)]
    pub untrain: bool,
    /// Threads for reading and tokenizing (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Message files, maildirs, MH folders, mbox files or TREC index files
    /// (an index gives each message's label itself: --spam or --ham with an
    /// index is an error).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Print the deciding tokens too.
    #[arg(long)]
    pub clues: bool,
    /// Bulk mode: don't print the file name (for tools that read the first number).
    #[arg(long)]
    pub no_filename: bool,
    /// Threads for bulk mode (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Messages to check; none: read one message from stdin.
    pub files: Vec<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Create the database (with the starter model unless --empty).
    Init {
        /// Start from nothing (for evaluations).
        #[arg(long)]
        empty: bool,
    },
    /// Messages per class, tokens, size.
    Stats,
    /// Write the database as text to stdout.
    Dump {
        /// Leave out tokens whose spam + ham count is below this (counts are
        /// weighted: a message learned after being misclassified counts twice).
        #[arg(long, default_value_t = 0)]
        min_count: u32,
        /// Include the training journal.
        #[arg(long)]
        journal: bool,
        /// Leave out the byte 4-gram regression's weights (up to 262,144
        /// lines; the starter model is built without them).
        #[arg(long)]
        no_grams: bool,
        /// Mark the dump a starter model: a database that loads it counts
        /// its messages as the starter's, and is cautious until it has
        /// learned mail of its own (models/build-starter uses this).
        #[arg(long)]
        starter: bool,
    },
    /// Add a dump (file or - for stdin) to the database.
    Load { file: PathBuf },
    /// Copy what is readable of a damaged database into a new one (OUT),
    /// and say what was kept and lost; the database itself is not changed.
    Recover {
        /// The new database file (must not exist).
        out: PathBuf,
    },
    /// Drop old tokens and journal entries.
    Expire {
        /// Drop tokens not seen in training for this many days, and the journal
        /// entries of messages learned longer ago.
        #[arg(long, default_value_t = 180)]
        days: u32,
        /// Drop tokens with a spam + ham count of 1 not seen for this many days.
        #[arg(long, default_value_t = 30)]
        hapax_days: u32,
        /// Tokens per write transaction.
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
    },
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// TREC index file (`spam|ham <path>` lines).
    pub index: PathBuf,
    /// When to train in the on-line run.
    #[arg(long, default_value = "on-everything")]
    pub train: TrainMode,
    /// k-fold cross-validation instead of the on-line run.
    #[arg(long)]
    pub folds: Option<usize>,
    /// Only the first N messages.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Write the ROC curve as SVG.
    #[arg(long)]
    pub roc: Option<PathBuf>,
    /// Write `<path> judge=<label> score=<s> logit=<z>` lines (trec-run --results's, and the logit the ROC area ranks by).
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// Add the envelope checks' tokens (HELO, reverse DNS), the envelope
    /// read from each message's first public Received hop, as the policy
    /// service would have seen it (no DNS asked).
    #[arg(long)]
    pub envelope_tokens: bool,
    /// Start from a dump instead of an empty model: a file (`hamlet db
    /// dump`, e.g. a starter built by models/build-starter), or `starter`
    /// for the built-in starter model: how a fresh install does on the
    /// stream as it learns.
    #[arg(long, value_name = "DUMP")]
    pub start_from: Option<PathBuf>,
    /// The auto-learn experiment: learn the first N messages with their
    /// labels, then only as --autolearn / --corrections say; figures are
    /// for the messages after the seed.
    #[arg(long)]
    pub seed: Option<usize>,
    /// After the seed, auto-learn confident verdicts (the [autolearn]
    /// rule, thresholds from --al-*).
    #[arg(long)]
    pub autolearn: bool,
    /// After the seed, learn each misclassified message with its label.
    #[arg(long)]
    pub corrections: bool,
    #[arg(long)]
    pub al_spam_min: Option<f64>,
    #[arg(long)]
    pub al_spam_max: Option<f64>,
    #[arg(long)]
    pub al_ham_min: Option<f64>,
    #[arg(long)]
    pub al_ham_max: Option<f64>,
    #[arg(long)]
    pub al_max_ratio: Option<f64>,
    #[arg(long)]
    pub al_min_per_class: Option<u64>,
    #[command(flatten)]
    pub params: ParamArgs,
}

/// Classifier and tokenizer knobs (for evaluation and tuning).
#[derive(Args, Debug, Clone)]
pub struct ParamArgs {
    #[arg(long)]
    pub robs: Option<f64>,
    #[arg(long)]
    pub robx: Option<f64>,
    #[arg(long)]
    pub min_dev: Option<f64>,
    #[arg(long)]
    pub max_clues: Option<usize>,
    #[arg(long)]
    pub combining: Option<Combining>,
    #[arg(long)]
    pub mix_fisher: Option<f64>,
    #[arg(long)]
    pub mix_lr: Option<f64>,
    #[arg(long)]
    pub mix_rate: Option<f64>,
    #[arg(long)]
    pub mix_clamp: Option<f64>,
    /// F of Fisher's soft clamp F·tanh(logit/F) in the combination (0: clamped at --mix-clamp).
    #[arg(long)]
    pub fisher_soft: Option<f64>,
    #[arg(long)]
    pub boost_errors: Option<bool>,
    #[arg(long)]
    pub lr_rate: Option<f64>,
    #[arg(long)]
    pub lr_normalize: Option<bool>,
    #[arg(long)]
    pub gram_rate: Option<f64>,
    /// Unit-length 4-gram feature vectors (evaluation only; try with --gram-rate 10).
    #[arg(long)]
    pub gram_unit: Option<bool>,
    #[arg(long)]
    pub mix_grams: Option<f64>,
    /// Rate of the pairwise step that moves the 4-gram weight (0 keeps --mix-grams).
    #[arg(long)]
    pub mix_pair_rate: Option<f64>,
    /// k of the early-model shrink n / (n + k).
    #[arg(long)]
    pub maturity: Option<f64>,
    /// β of the two-sided Fisher term (0 turns it off).
    #[arg(long)]
    pub tail_weight: Option<f64>,
    /// Knee k₀ of Fisher's clue count: past it k clues count as k₀·√(k/k₀) (0: all count).
    #[arg(long)]
    pub fisher_knee: Option<f64>,
    /// At most this many URL tokens among Fisher's clues, the strongest (0: no limit).
    #[arg(long)]
    pub url_clues: Option<usize>,
    /// k of the cold-start gate, in local messages per class (0 turns it off).
    #[arg(long)]
    pub cold_start: Option<f64>,
    /// Word pairs (orthogonal sparse bigrams) on or off.
    #[arg(long)]
    pub pairs: Option<bool>,
    /// Leading bytes of each message read for the byte 4-grams (evaluation
    /// only; try with --gram-unit true --gram-rate 10).
    #[arg(long)]
    pub gram_bytes: Option<usize>,
}

impl ParamArgs {
    fn apply(&self, p: &mut Params, o: &mut Options) {
        if let Some(v) = self.robs {
            p.robs = v
        }
        if let Some(v) = self.robx {
            p.robx = v
        }
        if let Some(v) = self.min_dev {
            p.min_dev = v
        }
        if let Some(v) = self.max_clues {
            p.max_clues = v
        }
        if let Some(v) = self.combining {
            p.combining = v
        }
        if let Some(v) = self.mix_fisher {
            p.mix_init[0] = v
        }
        if let Some(v) = self.mix_lr {
            p.mix_init[1] = v
        }
        if let Some(v) = self.mix_rate {
            p.mix_rate = v
        }
        if let Some(v) = self.mix_clamp {
            p.mix_clamp = v
        }
        if let Some(v) = self.fisher_soft {
            p.fisher_soft = v
        }
        if let Some(v) = self.boost_errors {
            p.boost_errors = v
        }
        if let Some(v) = self.lr_rate {
            p.lr_rate = v
        }
        if let Some(v) = self.lr_normalize {
            p.lr_normalize = v
        }
        if let Some(v) = self.gram_rate {
            p.gram_rate = v
        }
        if let Some(v) = self.gram_unit {
            p.gram_unit = v
        }
        if let Some(v) = self.mix_grams {
            p.gram_mix = v
        }
        if let Some(v) = self.mix_pair_rate {
            p.mix_pair_rate = v
        }
        if let Some(v) = self.maturity {
            p.maturity = v
        }
        if let Some(v) = self.tail_weight {
            p.tail_weight = v
        }
        if let Some(v) = self.fisher_knee {
            p.fisher_knee = v
        }
        if let Some(v) = self.url_clues {
            p.url_clues = v
        }
        if let Some(v) = self.cold_start {
            p.cold_start = v
        }
        if let Some(v) = self.pairs {
            o.pairs = v
        }
        if let Some(v) = self.gram_bytes {
            o.limits.gram_bytes = v
        }
    }
}

/// `db stats`'s line on the combination: the 4-gram learner's weight as
/// this stream has moved it (`classify::pair_step`).
fn print_gram_weight(cfg: &Config, st: &store::ModelState) -> Result<()> {
    let p = build::params(cfg)?;
    println!(
        "4-grams   weight {:.3} in the combined score (starts at {}; moved by the ranking of what is learned)",
        crate::classify::gram_weight(&p, st),
        p.gram_mix
    );
    Ok(())
}

/// Runs the command line; `main.rs` is just this.
pub fn main() -> ExitCode {
    quiet_broken_pipe();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        // The reader of our output went away (`hamlet db dump | head`).
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hamlet: {e}");
            ExitCode::from(3)
        }
    }
}

/// Output goes through `println!`, which panics when stdout is a closed
/// pipe (`hamlet db stats | true`); that ends the command quietly with exit
/// 0 instead, as a reader that stopped reading expects. Other panics go to
/// the hook that was there.
fn quiet_broken_pipe() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg =
            info.payload().downcast_ref::<String>().map(String::as_str).or_else(|| info.payload().downcast_ref::<&str>().copied()).unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        previous(info);
    }));
}

fn run(cli: Cli) -> Result<ExitCode> {
    // HAMLET_CONFIG stands for --config only where it always did: a
    // variable exported for these two must not move `check` or `train`
    // onto the service's database.
    let config = match (&cli.command, cli.config) {
        (Command::Client(_) | Command::ImapTrain(_), None) => std::env::var_os("HAMLET_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from),
        (_, c) => c,
    };
    if let Command::Client(a) = cli.command {
        return client::run(a, config.as_deref());
    }
    if let Command::UiPassword = cli.command {
        return ui_password();
    }
    let have_config = config.is_some();
    let cfg = load_config(config.as_deref(), cli.db)?;
    match cli.command {
        Command::Train(a) => train(&cfg, a),
        Command::Check(a) => check(&cfg, a),
        Command::Db(c) => db(&cfg, c),
        Command::Eval(a) => run_eval(&cfg, a),
        Command::Serve(a) => serve(cfg, a),
        Command::ImapTrain(a) => imap_train(cfg, have_config, a),
        Command::Client(_) | Command::UiPassword => unreachable!("answered above"),
    }
}

/// `hamlet ui-password`: the hash line of the password on stdin's first line.
fn ui_password() -> Result<ExitCode> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| Error::io("stdin", e))?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.chars().count() < 8 {
        return Err(Error::Invalid("the console password must have at least 8 characters".into()));
    }
    println!("password_hash = \"{}\"", crate::http::ui::hash_password(password));
    Ok(ExitCode::SUCCESS)
}

/// The configuration: the file if one is given, else the defaults; `--db`
/// (or `HAMLET_DB`) over either.
fn load_config(path: Option<&Path>, db: Option<PathBuf>) -> Result<Config> {
    let mut cfg = match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(db) = db {
        cfg.db = db;
    }
    Ok(cfg)
}

fn train(cfg: &Config, a: TrainArgs) -> Result<ExitCode> {
    let forced = match (a.spam, a.ham) {
        (true, _) => Some(Class::Spam),
        (_, true) => Some(Class::Ham),
        _ => None,
    };
    let mut entries: Vec<Entry> = Vec::new();
    for p in &a.paths {
        let found = mailbox::entries(p)?;
        // An index's labels are the truth the user keeps; a flag silently
        // overriding them would learn every message of a mixed index wrong.
        if let Some(c) = forced
            && found.iter().any(|e| e.label.is_some())
        {
            return Err(Error::Invalid(format!(
                "{}: a TREC index labels each message itself; drop --{c} (it would learn every message as {c})",
                p.display()
            )));
        }
        entries.extend(found);
    }
    for e in &mut entries {
        if let Some(c) = forced {
            e.label = Some(c);
        }
        if e.label.is_none() && !a.untrain {
            return Err(Error::Invalid(format!("{}: say --spam or --ham (or give a TREC index, which labels each message)", e.name())));
        }
    }
    let engine = build::engine(cfg, Open::Learn)?;
    let start = Instant::now();
    let bar = progress(entries.len() as u64);
    let mut counts = [0u64; 6];
    let untrain = a.untrain;
    let action = |e: &Entry| if untrain { Action::Unlearn } else { Action::Learn(e.label.unwrap_or(Class::Ham)) };
    engine.train_entries(&entries, num_threads(a.threads), action, &mut |outcomes: &[LearnOutcome]| {
        for &o in outcomes {
            counts[o as usize] += 1;
        }
        bar.inc(outcomes.len() as u64);
    })?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let names = [
        LearnOutcome::Learned,
        LearnOutcome::AlreadyLearned,
        LearnOutcome::Relearned,
        LearnOutcome::Unlearned,
        LearnOutcome::NotLearned,
        LearnOutcome::Confirmed,
    ];
    let summary: Vec<String> = names.iter().filter(|o| counts[**o as usize] > 0).map(|o| format!("{} {}", counts[*o as usize], o.name())).collect();
    println!(
        "{} messages in {:.1}s ({:.0}/s): {}",
        entries.len(),
        secs,
        entries.len() as f64 / secs.max(1e-9),
        if summary.is_empty() { "nothing to do".to_string() } else { summary.join(", ") }
    );
    Ok(ExitCode::SUCCESS)
}

fn progress(n: u64) -> indicatif::ProgressBar {
    if n < 50 || !std::io::stdout().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(n);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} messages, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

fn num_threads(want: Option<usize>) -> usize {
    want.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).max(1)
}

/// Formats a probability so that distinct values print distinctly (shortest
/// round-trip form; scientific below 1e-4), keeping the ranking for tools
/// that read the number back.
pub fn format_probability(p: f64) -> String {
    if p != 0.0 && p < 1e-4 { format!("{p:e}") } else { format!("{p}") }
}

fn clue_lines(s: &Score, max: usize) -> String {
    let mut out = String::new();
    for c in s.clues.iter().take(max) {
        out.push_str(&format!("  {:.6} {:>5} {:>5} {:+.4} {}\n", c.prob, c.spam, c.ham, c.weight, c.token));
    }
    out
}

fn check(cfg: &Config, a: CheckArgs) -> Result<ExitCode> {
    let engine = build::engine(cfg, Open::Score)?;
    if a.files.is_empty() {
        let mut raw = Vec::new();
        let max = engine.tokenizer.options.limits.max_parse_bytes as u64 + 1;
        std::io::stdin().take(max).read_to_end(&mut raw).map_err(|e| Error::io("<stdin>", e))?;
        let s = engine.check(&raw)?;
        let mut out = format!("{} {}\n", s.verdict, format_probability(s.probability));
        if a.clues {
            out.push_str(&clue_lines(&s, 30));
            out.push_str(&cold_note(&engine)?);
        }
        write_stdout(&out)?;
        return Ok(ExitCode::from(match s.verdict {
            Verdict::Spam => 0,
            Verdict::Ham => 1,
            Verdict::Unsure => 2,
        }));
    }
    let entries: Vec<Entry> = a.files.iter().map(|f| Entry { label: None, location: mailbox::Location::File(f.clone()) }).collect();
    let results = engine.check_entries(&entries, num_threads(a.threads))?;
    let mut out = String::new();
    let mut failed = false;
    for (name, r) in results {
        match r {
            Ok(s) => {
                if a.no_filename {
                    out.push_str(&format!("{} {}\n", s.verdict, format_probability(s.probability)));
                } else {
                    out.push_str(&format!("{} {} {}\n", name, s.verdict, format_probability(s.probability)));
                }
                if a.clues {
                    out.push_str(&clue_lines(&s, 30));
                }
            }
            Err(e) => {
                failed = true;
                eprintln!("hamlet: {e}");
            }
        }
    }
    write_stdout(&out)?;
    Ok(if failed { ExitCode::from(3) } else { ExitCode::SUCCESS })
}

/// With `--clues`: a line saying the cold-start gate is holding verdicts
/// back, and how to open it (nothing once it is off or half open: at
/// L ≥ k a message needs twice the cutoff's logit, and less as L grows).
fn cold_note(engine: &crate::engine::Engine<store::Db>) -> Result<String> {
    let st = engine.store().read()?.state()?;
    let Some(local) = crate::classify::cold_local(&engine.params, &st) else { return Ok(String::new()) };
    let k = engine.params.cold_start;
    if local as f64 >= k {
        return Ok(String::new());
    }
    let (spam, ham) = (st.messages.spam.saturating_sub(st.starter.spam), st.messages.ham.saturating_sub(st.starter.ham));
    Ok(format!(
        "cold start: {spam} spam and {ham} ham learned here so far; until it has learned some of each (hamlet train --spam|--ham), \
         the starter model alone calls nothing spam (cold_start = {k} in hamlet.toml)\n"
    ))
}

fn write_stdout(s: &str) -> Result<()> {
    let mut o = std::io::stdout().lock();
    match o.write_all(s.as_bytes()).and_then(|_| o.flush()) {
        Ok(()) => Ok(()),
        // A closed pipe (`hamlet check ... | head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::io("<stdout>", e)),
    }
}

fn db(cfg: &Config, c: DbCommand) -> Result<ExitCode> {
    let db_path = cfg.db.as_path();
    if cfg.db_is_redis() {
        return db_on_redis(cfg, c);
    }
    match c {
        DbCommand::Init { empty } => {
            if db_path.exists() {
                return Err(Error::Invalid(format!("{} already exists", db_path.display())));
            }
            let store = build::store(cfg, if empty { Open::Existing } else { Open::Learn })?;
            let st = store.read()?.state()?;
            println!(
                "created {} ({} spam, {} ham messages{})",
                db_path.display(),
                st.messages.spam,
                st.messages.ham,
                if empty { ", empty" } else { " from the starter model" }
            );
        }
        DbCommand::Stats => {
            if !db_path.exists() {
                return Err(Error::Invalid(format!("{}: no database yet (`hamlet db init` creates one)", db_path.display())));
            }
            // Read-only: stats work on a read-only file or filesystem.
            let store = store::open_db_read_only(db_path)?;
            let v = store.read()?;
            let st = v.state()?;
            println!("database  {}", db_path.display());
            println!("spam      {} messages ({} weighted)", st.messages.spam, st.totals.spam);
            println!("ham       {} messages ({} weighted)", st.messages.ham, st.totals.ham);
            if st.starter != store::Totals::default() {
                println!("starter   {} spam, {} ham of those came with the starter model", st.starter.spam, st.starter.ham);
            }
            print_gram_weight(cfg, &st)?;
            println!("tokens    {}", v.token_count()?);
            println!("journal   {}", v.journal_count()?);
            println!("bytes     {}", store.size_bytes());
        }
        DbCommand::Dump { min_count, journal, no_grams, starter } => {
            let store = if db_path.exists() { store::Db::Redb(store::open_db_read_only(db_path)?) } else { build::store(cfg, Open::Existing)? };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            store::dump(&store, &mut out, store::DumpOptions { min_count, grams: !no_grams, journal, as_starter: starter })?;
        }
        DbCommand::Load { file } => {
            let store = build::store(cfg, Open::Existing)?;
            load_file(&store, &file)?;
        }
        DbCommand::Recover { out } => {
            let report = store::recover(db_path, &out)?;
            println!("recovered {} into {}: {}", db_path.display(), out.display(), report.summary());
        }
        DbCommand::Expire { days, hapax_days, batch } => {
            let store = build::store(cfg, Open::Existing)?;
            let st = store::expire(&store, store::today(), days, hapax_days, batch)?;
            println!(
                "examined {} tokens, removed {}; removed {} journal entries older than {days} days",
                st.examined, st.removed, st.journal_removed
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `db load FILE` (`-`: stdin), and what it loaded.
fn load_file(store: &dyn TokenStore, file: &std::path::Path) -> Result<()> {
    let stats = if file.as_os_str() == "-" {
        store::load(store, &mut std::io::stdin().lock(), "<stdin>")?
    } else {
        let f = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
        store::load(store, &mut std::io::BufReader::new(f), &file.display().to_string())?
    };
    println!("loaded {} tokens, {} 4-gram weights, {} journal entries", stats.tokens, stats.grams, stats.journal);
    Ok(())
}

/// The `db` commands on a Redis model (`--db redis://…`).
fn db_on_redis(cfg: &Config, c: DbCommand) -> Result<ExitCode> {
    let open = |o| -> Result<store::RedisStore> {
        match build::store(cfg, o)? {
            store::Db::Redis(s) => Ok(s),
            store::Db::Redb(_) => Err(Error::Internal("a Redis URL opened a file".into())),
        }
    };
    match c {
        DbCommand::Init { empty } => {
            let store = open(if empty { Open::Existing } else { Open::Learn })?;
            let st = store.read()?.state()?;
            println!("{}: {} spam, {} ham messages", store.describe(), st.messages.spam, st.messages.ham);
        }
        DbCommand::Stats => {
            let store = open(Open::Existing)?;
            let v = store.read()?;
            let st = v.state()?;
            println!("database  {}", store.describe());
            println!("spam      {} messages ({} weighted)", st.messages.spam, st.totals.spam);
            println!("ham       {} messages ({} weighted)", st.messages.ham, st.totals.ham);
            print_gram_weight(cfg, &st)?;
            let tokens = v.token_count()?;
            println!("tokens    {tokens}");
            println!("journal   {}", v.journal_count()?);
            let bytes = store.memory_bytes()?;
            println!("bytes     {bytes} (Redis MEMORY USAGE of the model's keys)");
            if tokens > 0 {
                println!("per token {:.1} bytes", bytes as f64 / tokens as f64);
            }
        }
        DbCommand::Dump { min_count, journal, no_grams, starter } => {
            let store = open(Open::Existing)?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            store::dump(&store, &mut out, store::DumpOptions { min_count, grams: !no_grams, journal, as_starter: starter })?;
        }
        DbCommand::Load { file } => {
            let store = open(Open::Existing)?;
            load_file(&store, &file)?;
        }
        DbCommand::Recover { .. } => {
            return Err(Error::Invalid(
                "db recover salvages a damaged redb file; a Redis model is restored from a `db dump` (or Redis's own RDB/AOF backups)".into(),
            ));
        }
        DbCommand::Expire { days, hapax_days, batch } => {
            let store = open(Open::Existing)?;
            let st = store::expire(&store, store::today(), days, hapax_days, batch)?;
            println!(
                "examined {} tokens, removed {}; removed {} journal entries older than {days} days",
                st.examined, st.removed, st.journal_removed
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn serve(mut cfg: Config, a: ServeArgs) -> Result<ExitCode> {
    if let Some(h) = a.http {
        cfg.http = h;
    }
    if a.learn_token.is_some() {
        cfg.learn_token = a.learn_token;
    }
    if a.spamd.is_some() {
        cfg.spamd = a.spamd;
    }
    if a.spamd_allow_tell {
        cfg.spamd_allow_tell = true;
    }
    if a.policy.is_some() {
        cfg.policy = a.policy;
    }
    if a.milter.is_some() {
        cfg.milter = a.milter;
    }
    init_logging(&cfg.log);
    crate::serve::main(cfg)?;
    Ok(ExitCode::SUCCESS)
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // async-imap traces every command it sends, LOGIN and its password
    // included: never below warnings, whatever the filter says.
    let filter = filter.add_directive("async_imap=warn".parse().expect("a valid directive"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).try_init();
}

fn imap_train(cfg: Config, have_config: bool, a: ImapArgs) -> Result<ExitCode> {
    use crate::imap;
    if !have_config {
        return Err(Error::Invalid("imap-train needs --config (or HAMLET_CONFIG): the accounts are its [[imap.account]] tables".into()));
    }
    let accounts = imap::accounts(&cfg.imap, a.account.as_deref())?;
    init_logging(&cfg.log);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::System { what: "cannot start the runtime".into(), source })?;
    rt.block_on(async {
        let state = imap::State::open(&imap::state_path(&cfg))?;
        let opts = imap::RunOptions { batch: cfg.imap.batch, max_messages: a.max_messages, progress: true };
        if a.watch {
            let poll = Duration::from_secs(cfg.imap.poll_s.max(10));
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                crate::serve::shutdown_signal().await;
                let _ = stop_tx.send(true);
            });
            let lock = tokio::sync::Mutex::new(());
            let runs = accounts.iter().map(|acct| imap::watch(acct, &cfg, &state, &opts, poll, &lock, stop_rx.clone()));
            futures_util::future::join_all(runs).await;
            return Ok(ExitCode::SUCCESS);
        }
        let learner = imap::learner(&cfg)?;
        if let imap::Learner::Http { addr, .. } = &learner {
            eprintln!("hamlet serve holds {}: learning through its HTTP API at {addr}", cfg.db.display());
        }
        let bar = if std::io::stderr().is_terminal() {
            let b = indicatif::ProgressBar::new(0);
            b.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} messages {per_sec} {eta}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        let start = Instant::now();
        let mut budget = a.max_messages;
        let mut total = 0;
        let mut failed = Vec::new();
        for acct in accounts {
            // One broken account does not keep the others from learning.
            let folders = match imap::train_account(acct, &learner, &state, &opts, &mut budget, &bar).await {
                Ok(f) => f,
                Err(e) => {
                    bar.suspend(|| eprintln!("hamlet: {e}"));
                    failed.push(acct.name.clone());
                    continue;
                }
            };
            for (folder, s) in folders {
                total += s.fetched;
                let reset = if s.uidvalidity_reset { " (UIDVALIDITY changed: read afresh)" } else { "" };
                bar.suspend(|| {
                    println!(
                        "{}/{folder}: fetched {}, learned {}, relearned {}, skipped {}{reset}",
                        acct.name, s.fetched, s.learned, s.relearned, s.skipped
                    )
                });
            }
        }
        bar.finish_and_clear();
        let secs = start.elapsed().as_secs_f64();
        println!("imap-train: {total} messages in {secs:.1} s ({:.0} messages/s)", total as f64 / secs.max(1e-9));
        if failed.is_empty() { Ok(ExitCode::SUCCESS) } else { Err(Error::Remote(format!("failed accounts: {}", failed.join(", ")))) }
    })
}

/// The in-memory model an on-line evaluation starts from: empty, or a dump
/// (`starter`: the built-in starter model).
fn eval_engine(params: &crate::classify::Params, from: Option<&Path>) -> Result<crate::engine::Engine<store::MemoryStore>> {
    let engine = eval::empty(params);
    match from {
        None => {}
        Some(p) if p == Path::new("starter") => {
            let seed = store::starter()?;
            engine.store().write(&mut |w| store::apply(w, &seed, "models/starter.dump"))?;
        }
        Some(p) => {
            let f = std::fs::File::open(p).map_err(|e| Error::io(p, e))?;
            store::load(engine.store(), &mut std::io::BufReader::new(f), &p.display().to_string())?;
        }
    }
    Ok(engine)
}

fn run_eval(cfg: &Config, a: EvalArgs) -> Result<ExitCode> {
    let mut params = build::params(cfg)?;
    let mut options = Options::default();
    a.params.apply(&mut params, &mut options);
    let tokenizer = Tokenizer::new(options);
    let mut entries = mailbox::index(&a.index)?;
    if let Some(n) = a.limit {
        entries.truncate(n);
    }
    let start = Instant::now();
    let mut prepared = eval::prepare_all(&tokenizer, &entries, num_threads(None))?;
    if a.envelope_tokens {
        let checker = crate::envelope::Checker::<crate::envelope::greylist::MemoryGreyStore>::new(Default::default(), None)?;
        let max = tokenizer.options.limits.max_parse_bytes + 1;
        let (mut with_hop, mut with_tokens) = (0usize, 0usize);
        for (e, (_, p)) in entries.iter().zip(prepared.iter_mut()) {
            if let Some(env) = crate::envelope::received::envelope(&e.read(max)?) {
                with_hop += 1;
                let tokens = checker.check(&env, 0)?.tokens();
                with_tokens += usize::from(!tokens.is_empty());
                p.add_tokens(tokens);
            }
        }
        eprintln!("envelope tokens: {with_hop} of {} messages have a public Received hop, {with_tokens} got tokens", entries.len());
    }
    if a.folds.is_some() && a.start_from.is_some() {
        return Err(Error::Invalid("--start-from is for the on-line run; k-fold trains each fold from empty".into()));
    }
    let judgements = match (a.folds, a.seed) {
        (Some(k), _) => eval::kfold(&params, &prepared, k)?,
        (None, Some(seed)) => {
            let mut rule = crate::autolearn::AutoLearn { enabled: true, ..Default::default() };
            if let Some(v) = a.al_spam_min {
                rule.spam_min = v
            }
            if let Some(v) = a.al_spam_max {
                rule.spam_max = v
            }
            if let Some(v) = a.al_ham_min {
                rule.ham_min = v
            }
            if let Some(v) = a.al_ham_max {
                rule.ham_max = v
            }
            if let Some(v) = a.al_max_ratio {
                rule.max_ratio = v
            }
            if let Some(v) = a.al_min_per_class {
                rule.min_per_class = v
            }
            rule.check(params.ham_cutoff, params.spam_cutoff)?;
            let after = eval::AfterSeed { autolearn: a.autolearn.then_some(rule), corrections: a.corrections };
            let engine = eval_engine(&params, a.start_from.as_deref())?;
            let (j, learned, wrong) = eval::seeded(&engine, &prepared, seed, &after)?;
            eprintln!("after a seed of {seed}: {learned} auto-learns, {wrong} of them as the wrong class");
            entries.drain(..seed.min(entries.len()));
            j
        }
        (None, None) => {
            let engine = eval_engine(&params, a.start_from.as_deref())?;
            let j = eval::online_with(&engine, &prepared, a.train)?;
            // Where the stream moved the 4-gram learner's weight: how much it
            // came to count beside the words on this stream.
            let state = engine.store().read()?.state()?;
            eprintln!("4-gram weight at the end: {:.3} (starts at {})", crate::classify::gram_weight(&params, &state), params.gram_mix);
            j
        }
    };
    let secs = start.elapsed().as_secs_f64();
    let m = eval::metrics(&judgements, 0.5);
    if let Some(path) = &a.results {
        let mut s = String::new();
        for (e, j) in entries.iter().zip(&judgements) {
            s.push_str(&format!(
                "{} judge={} score={} logit={}\n",
                e.name(),
                if j.spam { "spam" } else { "ham" },
                format_probability(j.score),
                j.rank
            ));
        }
        std::fs::write(path, s).map_err(|e| Error::io(path, e))?;
    }
    if let Some(path) = &a.roc {
        let title = format!("hamlet on {} (1-ROCA% {:.4})", a.index.display(), 100.0 * m.one_minus_roca);
        std::fs::write(path, eval::roc_svg(&judgements, &title)).map_err(|e| Error::io(path, e))?;
    }
    println!("{}", m.report(secs));
    Ok(ExitCode::SUCCESS)
}
