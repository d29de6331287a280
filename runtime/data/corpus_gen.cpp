#include "runtime/data/corpus_gen.h"

#include <array>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "runtime/core/check.h"
#include "runtime/data/rng.h"

namespace zt {
namespace {

// ---- vocabulary (all invented for this generator)
// ------------------------------------------------

struct Verb {
  const char* third;  // she ___
  const char* base;   // they ___
  const char* past;
};

struct Pronoun {
  const char* subject;
  const char* object;
  const char* possessive;
  bool plural;  // singular "they" takes plural verbs: they are, they bake
};

constexpr std::array<Pronoun, 3> kPronouns = {{
    {"she", "her", "her", false},
    {"he", "him", "his", false},
    {"they", "them", "their", true},
}};

struct Species {
  const char* singular;
  const char* plural;
  int legs;
  const char* feature;  // "a ___" or "___": follows "has" / "have"
  Verb sound;           // what it does when happy
  const char* home;     // where it lives
  const char* food;     // what every one of them eats
};

// thrumfish and burrowkin have plurals spelled like the singular: agreement then rests on the
// determiner alone (a thrumfish drums / thrumfish drum), which is what makes it worth learning.
constexpr std::array<Species, 9> kSpecies = {{
    {"mossling",
     "mosslings",
     6,
     "soft green fur",
     {"hums", "hum", "hummed"},
     "under old logs",
     "damp mushrooms"},
    {"quillback",
     "quillbacks",
     4,
     "a back full of quills",
     {"clicks", "click", "clicked"},
     "in dry burrows",
     "crickets"},
    {"thrumfish",
     "thrumfish",
     0,
     "silver scales",
     {"drums", "drum", "drummed"},
     "in deep cold pools",
     "river weed"},
    {"glimmerwing",
     "glimmerwings",
     2,
     "wings that shine at dusk",
     {"sings", "sing", "sang"},
     "in tall reeds",
     "nectar"},
    {"burrowkin",
     "burrowkin",
     4,
     "broad digging claws",
     {"grumbles", "grumble", "grumbled"},
     "in tunnels under the hills",
     "roots"},
    {"fenwhistle",
     "fenwhistles",
     2,
     "a long thin beak",
     {"whistles", "whistle", "whistled"},
     "at the edges of marshes",
     "snails"},
    {"dapplehorn",
     "dapplehorns",
     4,
     "spotted horns",
     {"snorts", "snort", "snorted"},
     "in open meadows",
     "clover"},
    {"snorrel",
     "snorrels",
     8,
     "a striped tail",
     {"chatters", "chatter", "chattered"},
     "in hollow trees",
     "acorns"},
    {"lanternmoth",
     "lanternmoths",
     6,
     "wings that glow",
     {"buzzes", "buzz", "buzzed"},
     "near warm chimneys",
     "candle smoke"},
}};

struct Trade {
  const char* name;
  const char* plural;
  Verb make;
  const char* good;   // one ___
  const char* goods;  // two ___
};

constexpr std::array<Trade, 11> kTrades = {{
    {"weaver", "weavers", {"weaves", "weave", "wove"}, "blanket", "blankets"},
    {"baker", "bakers", {"bakes", "bake", "baked"}, "loaf", "loaves"},
    {"smith", "smiths", {"forges", "forge", "forged"}, "nail", "nails"},
    {"potter", "potters", {"shapes", "shape", "shaped"}, "bowl", "bowls"},
    {"brewer", "brewers", {"fills", "fill", "filled"}, "jug of cider", "jugs of cider"},
    {"fisher", "fishers", {"catches", "catch", "caught"}, "eel", "eels"},
    {"carver", "carvers", {"carves", "carve", "carved"}, "spoon", "spoons"},
    {"chandler", "chandlers", {"dips", "dip", "dipped"}, "candle", "candles"},
    {"roper", "ropers", {"twists", "twist", "twisted"}, "rope", "ropes"},
    {"beader", "beaders", {"polishes", "polish", "polished"}, "bead", "beads"},
    {"cobbler", "cobblers", {"mends", "mend", "mended"}, "shoe", "shoes"},
}};

constexpr std::array<const char*, 12> kPlaceNames = {
    "Dallowmere", "Kestrin Hollow", "Umberfall",   "Low Tessing", "Brackenmouth", "Ostry Fen",
    "Varrowgate", "Pellinford",     "Quorra Hill", "Sallowby",    "Wendle Cross", "Mirthing",
};
constexpr std::array<const char*, 10> kPlaceFeatures = {
    "a slow brown river",      "a ring of standing stones", "a windmill with blue sails",
    "a lake full of reeds",    "an old stone bridge",       "a forest of silver birches",
    "a crooked clock tower",   "a field of sunflowers",     "a chalk cliff",
    "a well that never dries",
};
constexpr std::array<const char*, 7> kWeathers = {"foggy", "windy", "rainy", "sunny",
                                                  "cold",  "warm",  "misty"};
constexpr std::array<const char*, 5> kTownSizes = {"small", "busy", "quiet", "old", "muddy"};
constexpr std::array<const char*, 7> kWeekdays = {"Brightday", "Mudday",  "Windsday", "Thornsday",
                                                  "Fairday",   "Lampday", "Stillday"};
constexpr std::array<const char*, 10> kColors = {"red",   "blue",  "green",  "yellow", "grey",
                                                 "white", "black", "orange", "violet", "brown"};
constexpr std::array<const char*, 8> kGarments = {"cloak", "hat",       "scarf", "coat",
                                                  "apron", "waistcoat", "hood",  "pair of boots"};
constexpr std::array<const char*, 12> kFoods = {
    "plum cakes", "roasted acorns", "honey bread", "pickled reeds", "barley soup", "salted eels",
    "apple pie",  "toasted seeds",  "mint tea",    "cheese rolls",  "pear jam",    "onion pie",
};
constexpr std::array<const char*, 36> kNames = {
    "Vorna",   "Tobbet", "Ilsabet", "Pellam", "Quenna", "Orrin",  "Dusk",    "Marrow", "Fenna",
    "Gorrick", "Hettie", "Jonquil", "Kell",   "Lumo",   "Nissa",  "Oswin",   "Pip",    "Rusk",
    "Sable",   "Tansy",  "Ulla",    "Wick",   "Yarrow", "Zennor", "Brindle", "Corvin", "Dabble",
    "Emmet",   "Fitch",  "Grelda",  "Hob",    "Ivo",    "Mab",    "Perrin",  "Sorrel", "Teague",
};
// Things to count, each where it would be counted.
struct Countable {
  const char* things;
  const char* where;
};
constexpr std::array<Countable, 10> kCountables = {{
    {"apples", "in the basket"},
    {"geese", "on the pond"},
    {"boats", "in the harbor"},
    {"stars", "above the hill"},
    {"pebbles", "in the jar"},
    {"lanterns", "on the bridge"},
    {"bells", "in the tower"},
    {"fence posts", "along the lane"},
    {"sheep", "in the meadow"},
    {"books", "on the shelf"},
}};

// ---- the world: drawn once from the seed
// ---------------------------------------------------------

struct Place {
  const char* name;
  const char* feature;
  const char* weather;
  const char* size;
  int market_day;
  int trade;  // what its market is known for
};

struct Character {
  const char* name;
  int pronoun;
  int species;
  int place;
  int trade;
  const char* color;
  const char* garment;
  const char* food;
  int age;
  int friend_index;
  int birthday;  // weekday index
};

std::string cap(std::string s) {
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 'a' + 'A');
  return s;
}

template <typename T, size_t N>
const T& pick(data::DataRng& rng, const std::array<T, N>& items) {
  return items[rng.below(N)];
}

class Generator {
 public:
  explicit Generator(uint64_t seed) : rng_(data::mix64(seed ^ 0x636F72707573ull)) { build_world(); }

  void generate(size_t bytes) {
    int chapter = 1;
    while (out_.size() < bytes) {
      const Character& hero = cast_[rng_.below(cast_.size())];
      out_ += fmt::format("Chapter {}: {} of {}\n\n", cap(number_words(chapter)), hero.name,
                          places_[static_cast<size_t>(hero.place)].name);
      const int paragraphs = static_cast<int>(rng_.range(6, 12));
      for (int i = 0; i < paragraphs && out_.size() < bytes; ++i) paragraph(hero);
      ++chapter;
    }
  }

  std::string take() { return std::move(out_); }

 private:
  void build_world() {
    for (size_t i = 0; i < kPlaceNames.size(); ++i) {
      Place p;
      p.name = kPlaceNames[i];
      p.feature = pick(rng_, kPlaceFeatures);
      p.weather = pick(rng_, kWeathers);
      p.size = pick(rng_, kTownSizes);
      p.market_day = static_cast<int>(rng_.below(kWeekdays.size()));
      p.trade = static_cast<int>(rng_.below(kTrades.size()));
      places_.push_back(p);
    }
    // 24 of the names, in a seeded order, each with fixed attributes.
    std::vector<const char*> names(kNames.begin(), kNames.end());
    shuffle(names);
    constexpr size_t kCast = 24;
    for (size_t i = 0; i < kCast; ++i) {
      Character c;
      c.name = names[i];
      c.pronoun = static_cast<int>(rng_.below(kPronouns.size()));
      c.species = static_cast<int>(rng_.below(kSpecies.size()));
      c.place = static_cast<int>(rng_.below(places_.size()));
      c.trade = static_cast<int>(rng_.below(kTrades.size()));
      c.color = pick(rng_, kColors);
      c.garment = pick(rng_, kGarments);
      c.food = pick(rng_, kFoods);
      c.age = static_cast<int>(rng_.range(9, 95));
      c.birthday = static_cast<int>(rng_.below(kWeekdays.size()));
      c.friend_index = 0;
      cast_.push_back(c);
    }
    for (size_t i = 0; i < kCast; ++i) {
      size_t f = rng_.below(kCast - 1);
      if (f >= i) ++f;  // never one's own best friend
      cast_[i].friend_index = static_cast<int>(f);
    }
  }

  // -- small helpers --

  template <typename T>
  void shuffle(std::vector<T>& items) {
    for (size_t i = items.size(); i > 1; --i) std::swap(items[i - 1], items[rng_.below(i)]);
  }

  const Pronoun& pro(const Character& c) const { return kPronouns[static_cast<size_t>(c.pronoun)]; }
  const char* verb(const Verb& v, bool plural) const { return plural ? v.base : v.third; }
  const char* be(bool plural) const { return plural ? "are" : "is"; }
  const Species& species(const Character& c) const {
    return kSpecies[static_cast<size_t>(c.species)];
  }
  const Trade& trade(const Character& c) const { return kTrades[static_cast<size_t>(c.trade)]; }
  const Place& home(const Character& c) const { return places_[static_cast<size_t>(c.place)]; }
  const Character& friend_of(const Character& c) const {
    return cast_[static_cast<size_t>(c.friend_index)];
  }
  const Character& someone_else(const Character& c) {
    const Character* other = &c;
    while (other == &c) other = &cast_[rng_.below(cast_.size())];
    return *other;
  }
  // Half the numbers in words, half in digits, so both spellings are learned side by side.
  std::string num(int64_t n, bool words) { return words ? number_words(n) : std::to_string(n); }
  std::string count_of(int64_t n, const Trade& t, bool words) {
    return fmt::format("{} {}", num(n, words), n == 1 ? t.good : t.goods);
  }
  std::string a_an(const char* word) const {
    const char c = word[0];
    const bool vowel = c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u';
    return fmt::format("{} {}", vowel ? "an" : "a", word);
  }
  std::string legs(int n) const { return n == 0 ? "no legs" : number_words(n) + " legs"; }

  void paragraph(const Character& hero) {
    // The chapter's hero appears in about half the paragraphs, so a chapter reads as one story.
    const Character& c = rng_.chance(1, 2) ? hero : cast_[rng_.below(cast_.size())];
    switch (rng_.below(10)) {
      case 0:
        portrait(c);
        break;
      case 1:
        work_day(c);
        break;
      case 2:
      case 3:
        dialogue(c, someone_else(c));
        break;
      case 4:
        town(home(c));
        break;
      case 5:
        creature(kSpecies[rng_.below(kSpecies.size())]);
        break;
      case 6:
        counting(c);
        break;
      case 7:
        lesson(c);
        break;
      case 8:
        week(c);
        break;
      default:
        letter(c, rng_.chance(2, 3) ? friend_of(c) : someone_else(c));
        break;
    }
    out_ += "\n";
  }

  void portrait(const Character& c) {
    const Pronoun& p = pro(c);
    const Species& s = species(c);
    const Trade& t = trade(c);
    const Character& f = friend_of(c);
    std::vector<std::string> facts;
    facts.push_back(fmt::format("{} {} a {}, and every day {} {} {}.", cap(p.subject), be(p.plural),
                                t.name, p.subject, verb(t.make, p.plural), t.goods));
    facts.push_back(fmt::format("{} always {} a {} {}.", cap(p.subject),
                                p.plural ? "wear" : "wears", c.color, c.garment));
    facts.push_back(fmt::format("{} favorite food is {}.", cap(p.possessive), c.food));
    facts.push_back(fmt::format("{} is {} years old.", c.name, number_words(c.age)));
    facts.push_back(fmt::format("{} best friend is {}, the {} from {}.", cap(p.possessive), f.name,
                                trade(f).name, home(f).name));
    facts.push_back(fmt::format("Like every {}, {} {} when {} {} happy.", s.singular, c.name,
                                s.sound.third, p.subject, be(p.plural)));
    facts.push_back(fmt::format("{} was born on a {}.", c.name, kWeekdays[c.birthday]));
    shuffle(facts);
    out_ += fmt::format("{} is {} who lives in {}.", c.name, a_an(s.singular), home(c).name);
    const size_t n = 3 + rng_.below(facts.size() - 2);
    for (size_t i = 0; i < n; ++i) out_ += " " + facts[i];
    out_ += "\n";
  }

  void work_day(const Character& c) {
    const Pronoun& p = pro(c);
    const Trade& t = trade(c);
    const bool words = rng_.chance(1, 2);
    const int64_t a = rng_.range(2, 20);
    const int64_t b = rng_.range(1, 12);
    const int64_t sold = rng_.range(1, a + b - 1);
    const int day = static_cast<int>(rng_.below(kWeekdays.size()));
    out_ += fmt::format("On {}, {} the {} {} {} in the morning.", kWeekdays[day], c.name, t.name,
                        t.make.past, count_of(a, t, words));
    out_ += fmt::format(" After lunch {} {} {} more, so by evening {} had {}.", p.subject,
                        t.make.past, num(b, words), p.subject, count_of(a + b, t, words));
    out_ += fmt::format(" {} sold {} at the market in {} and kept {}.", cap(p.subject),
                        num(sold, words), home(c).name, num(a + b - sold, words));
    if (rng_.chance(1, 2)) {
      out_ +=
          fmt::format(" {} + {} = {}, and {} - {} = {}.", a, b, a + b, a + b, sold, a + b - sold);
    }
    out_ += "\n";
  }

  // Questions whose answers are the character's fixed facts, in the first person.
  void dialogue(const Character& a, const Character& b) {
    const Pronoun& pa = pro(a);
    const Trade& tb = trade(b);
    out_ += fmt::format("{} met {} on the road to {}.\n", a.name, b.name, home(b).name);
    out_ += fmt::format("\"Good {}, {},\" said {}.\n", rng_.chance(1, 2) ? "morning" : "evening",
                        b.name, a.name);
    std::vector<int> topics = {0, 1, 2, 3, 4, 5};
    shuffle(topics);
    const size_t n = 2 + rng_.below(3);
    for (size_t i = 0; i < n; ++i) {
      switch (topics[i]) {
        case 0:
          out_ += fmt::format("\"Where do you live, {}?\" asked {}.\n", b.name, a.name);
          out_ += fmt::format("\"I live in {},\" said {}.\n", home(b).name, b.name);
          break;
        case 1:
          out_ += fmt::format("\"What is your trade?\" asked {}.\n", a.name);
          out_ += fmt::format("\"I am a {}. I {} {},\" said {}.\n", tb.name, tb.make.base, tb.goods,
                              b.name);
          break;
        case 2:
          out_ += fmt::format("\"How old are you?\" asked {}.\n", a.name);
          out_ += fmt::format("\"I am {} years old,\" said {}.\n", number_words(b.age), b.name);
          break;
        case 3:
          out_ += fmt::format("\"What do you like to eat?\" asked {}.\n", a.name);
          out_ += fmt::format("\"I like {} best,\" said {}.\n", b.food, b.name);
          break;
        case 4:
          out_ += fmt::format("\"Who is your best friend?\" asked {}.\n", a.name);
          out_ += fmt::format("\"My best friend is {},\" said {}.\n", friend_of(b).name, b.name);
          break;
        default: {
          const int64_t want = rng_.range(2, 9);
          out_ += fmt::format("\"May I have {}, please?\" asked {}.\n", count_of(want, tb, true),
                              a.name);
          out_ += fmt::format("\"Of course,\" said {}, and counted them out:", b.name);
          for (int64_t k = 1; k <= want; ++k) {
            out_ += fmt::format("{} {}", k == 1 ? "" : ",", number_words(k));
          }
          out_ += ".\n";
          break;
        }
      }
    }
    out_ += fmt::format("\"Farewell,\" said {}, and {} walked home to {}.\n", a.name, pa.subject,
                        home(a).name);
  }

  void town(const Place& place) {
    const Trade& t = kTrades[static_cast<size_t>(place.trade)];
    std::vector<std::string> facts;
    facts.push_back(fmt::format("It is often {} there.", place.weather));
    facts.push_back(fmt::format("The market in {} opens every {}.", place.name,
                                kWeekdays[static_cast<size_t>(place.market_day)]));
    facts.push_back(
        fmt::format("The {} of {} are known for their {}.", t.plural, place.name, t.goods));
    std::vector<const char*> folk;
    for (const Character& c : cast_) {
      if (&home(c) == &place) folk.push_back(c.name);
    }
    shuffle(folk);
    if (folk.size() == 1) {
      facts.push_back(fmt::format("{} lives there.", folk[0]));
    } else if (folk.size() > 1) {
      std::string names;
      for (size_t i = 0; i < folk.size(); ++i) {
        names += folk[i];
        names += i + 2 < folk.size() ? ", " : (i + 2 == folk.size() ? " and " : "");
      }
      facts.push_back(names + " live there.");
    }
    shuffle(facts);
    out_ += fmt::format("{} is {} town beside {}.", place.name, a_an(place.size), place.feature);
    for (const std::string& f : facts) out_ += " " + f;
    out_ += "\n";
  }

  // Each fact told of one creature or of many, at random, so agreement must be learned.
  void creature(const Species& s) {
    std::vector<std::string> lines;
    const bool p1 = rng_.chance(1, 2);
    lines.push_back(p1 ? fmt::format("{} have {} and {}.", cap(s.plural), legs(s.legs), s.feature)
                       : fmt::format("A {} has {} and {}.", s.singular, legs(s.legs), s.feature));
    const bool p2 = rng_.chance(1, 2);
    lines.push_back(p2 ? fmt::format("{} live {}.", cap(s.plural), s.home)
                       : fmt::format("A {} lives {}.", s.singular, s.home));
    const bool p3 = rng_.chance(1, 2);
    lines.push_back(p3 ? fmt::format("{} {} when they are happy.", cap(s.plural), s.sound.base)
                       : fmt::format("A {} {} when it is happy.", s.singular, s.sound.third));
    const bool p4 = rng_.chance(1, 2);
    lines.push_back(p4 ? fmt::format("All {} eat {}.", s.plural, s.food)
                       : fmt::format("Every {} eats {}.", s.singular, s.food));
    const int64_t herd = rng_.range(2, 9);
    if (s.legs > 0) {
      lines.push_back(fmt::format("If one {} has {}, then {} {} have {} legs in all.", s.singular,
                                  legs(s.legs), number_words(herd), s.plural,
                                  number_words(herd * s.legs)));
    }
    shuffle(lines);
    for (size_t i = 0; i < lines.size(); ++i) out_ += (i ? " " : "") + lines[i];
    out_ += "\n";
  }

  void counting(const Character& c) {
    const Pronoun& p = pro(c);
    const Countable& item = pick(rng_, kCountables);
    const char* things = item.things;
    switch (rng_.below(3)) {
      case 0: {
        const int64_t n = rng_.range(3, 15);
        const bool words = rng_.chance(2, 3);
        out_ += fmt::format("{} counted the {} {}:", c.name, things, item.where);
        for (int64_t k = 1; k <= n; ++k)
          out_ += fmt::format("{} {}", k == 1 ? "" : ",", num(k, words));
        out_ += fmt::format(". There were {} {}.", num(n, words), things);
        break;
      }
      case 1: {
        const int64_t n = rng_.range(3, 10);
        out_ += fmt::format("Before the race in {}, {} counted down from {}:", home(c).name, c.name,
                            number_words(n));
        for (int64_t k = n; k >= 1; --k)
          out_ += fmt::format("{} {}", k == n ? "" : ",", number_words(k));
        out_ += fmt::format(", go! {} {} fast.", cap(p.subject), p.plural ? "run" : "runs");
        break;
      }
      default: {
        const int64_t step = rng_.range(2, 5);
        const int64_t n = rng_.range(4, 8);
        out_ += fmt::format("{} counted the {} in {}s:", c.name, things, number_words(step));
        for (int64_t k = 1; k <= n; ++k) {
          out_ += fmt::format("{} {}", k == 1 ? "" : ",", number_words(k * step));
        }
        out_ += fmt::format(". That makes {} {}.", number_words(n * step), things);
        break;
      }
    }
    out_ += "\n";
  }

  void lesson(const Character& teacher) {
    const Species& s = kSpecies[rng_.below(kSpecies.size())];
    out_ += fmt::format("{} taught sums to the young {} of {}.", teacher.name, s.plural,
                        home(teacher).name);
    const int facts = static_cast<int>(rng_.range(3, 6));
    for (int i = 0; i < facts; ++i) {
      const bool words = rng_.chance(1, 2);
      int64_t a = rng_.range(1, 12);
      int64_t b = rng_.range(1, 12);
      switch (rng_.below(3)) {
        case 0:
          out_ += words ? fmt::format(" {} plus {} is {}.", cap(number_words(a)), number_words(b),
                                      number_words(a + b))
                        : fmt::format(" {} + {} = {}.", a, b, a + b);
          break;
        case 1:
          if (a < b) std::swap(a, b);
          out_ += words ? fmt::format(" {} minus {} is {}.", cap(number_words(a)), number_words(b),
                                      number_words(a - b))
                        : fmt::format(" {} - {} = {}.", a, b, a - b);
          break;
        default:
          out_ += words ? fmt::format(" {} times {} is {}.", cap(number_words(a)), number_words(b),
                                      number_words(a * b))
                        : fmt::format(" {} * {} = {}.", a, b, a * b);
          break;
      }
    }
    const Character& pupil = someone_else(teacher);
    const int64_t a = rng_.range(2, 9);
    const int64_t b = rng_.range(2, 9);
    out_ += "\n";
    out_ += fmt::format("\"What is {} plus {}?\" asked {}.\n", number_words(a), number_words(b),
                        teacher.name);
    out_ += fmt::format("\"{}!\" said {}.\n", cap(number_words(a + b)), pupil.name);
  }

  void week(const Character& c) {
    const int today = static_cast<int>(rng_.below(kWeekdays.size()));
    const auto day = [](int d) { return kWeekdays[static_cast<size_t>((d % 7 + 7) % 7)]; };
    if (rng_.chance(1, 3)) {
      out_ += "There are seven days in the week:";
      for (int d = 0; d < 7; ++d)
        out_ += fmt::format("{} {}", d == 0 ? "" : (d == 6 ? " and" : ","), day(d));
      out_ += ".";
    } else {
      out_ += fmt::format("Today is {}. Yesterday was {}, and tomorrow will be {}.", day(today),
                          day(today - 1), day(today + 1));
    }
    const Place& place = home(c);
    const int wait = (place.market_day - today + 7) % 7;
    if (wait == 0) {
      out_ += fmt::format(" The market in {} opens today, so {} takes {} {} there.", place.name,
                          c.name, pro(c).possessive, trade(c).goods);
    } else {
      out_ += fmt::format(" The market in {} opens on {}, in {} {}.", place.name,
                          day(place.market_day), number_words(wait), wait == 1 ? "day" : "days");
    }
    out_ += fmt::format(" {} was born on a {}.\n", c.name, day(c.birthday));
  }

  void letter(const Character& from, const Character& to) {
    const Trade& t = trade(from);
    const int64_t made = rng_.range(3, 30);
    const int64_t sold = rng_.range(1, made - 1);
    out_ += fmt::format("Dear {},\n", to.name);
    out_ += fmt::format("I hope all is well in {}. Here in {} it has been {} all week.",
                        home(to).name, home(from).name, home(from).weather);
    out_ += fmt::format(" I {} {} and sold {}, so I have {} left.", t.make.past,
                        count_of(made, t, true), number_words(sold), number_words(made - sold));
    out_ += fmt::format(" Please visit me on {}, when the market opens.\n",
                        kWeekdays[static_cast<size_t>(home(from).market_day)]);
    out_ += fmt::format("Your friend,\n{}\n", from.name);
  }

  data::DataRng rng_;
  std::vector<Place> places_;
  std::vector<Character> cast_;
  std::string out_;
};

}  // namespace

std::string number_words(int64_t n) {
  ZT_CHECK(n >= 0 && n < 1000000, "number_words({}) is out of range", n);
  static constexpr std::array<const char*, 20> kSmall = {
      "zero",     "one",     "two",     "three",     "four",     "five",    "six",
      "seven",    "eight",   "nine",    "ten",       "eleven",   "twelve",  "thirteen",
      "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"};
  static constexpr std::array<const char*, 10> kTens = {
      "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"};
  const auto below_hundred = [](int64_t v) -> std::string {
    if (v < 20) return kSmall[static_cast<size_t>(v)];
    std::string s = kTens[static_cast<size_t>(v / 10)];
    if (v % 10 != 0) s += std::string("-") + kSmall[static_cast<size_t>(v % 10)];
    return s;
  };
  const auto below_thousand = [&](int64_t v) -> std::string {
    if (v < 100) return below_hundred(v);
    std::string s = std::string(kSmall[static_cast<size_t>(v / 100)]) + " hundred";
    if (v % 100 != 0) s += " and " + below_hundred(v % 100);
    return s;
  };
  if (n < 1000) return below_thousand(n);
  std::string s = below_thousand(n / 1000) + " thousand";
  const int64_t rest = n % 1000;
  if (rest == 0) return s;
  return s + (rest < 100 ? " and " : " ") + below_thousand(rest);
}

std::string generate_corpus(uint64_t seed, size_t bytes) {
  if (bytes == 0) return {};
  Generator gen(seed);
  gen.generate(bytes);
  std::string text = gen.take();
  text.resize(bytes);
  text.back() = '\n';
  return text;
}

}  // namespace zt
