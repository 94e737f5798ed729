"""Generic English text cut into fixed-length token windows, available offline.

Perplexity checks and Fisher scores need "ordinary text" that is not the behaviour under study
(e.g. the generic term of a ToM parameter mask, Wu et al. 2025, arXiv 2504.04238). The offline
corpus uses only text that ships with the machine, plus paragraphs written for steerscope:

- `pydoc_data.topics`: the English help texts of Python's `help()` (prose with some code),
- the `LICENSE.txt` of the running Python (the history of Python and its licences),
- a few Debian licence texts from /usr/share/common-licenses, if present (one per family,
  to avoid near-duplicate versions),
- `PARAGRAPHS`: everyday English paragraphs written for steerscope (always available).

`source="hf:<name>[:<config>]"` streams the "text" column of a Hugging Face data set instead,
only when the `datasets` package is installed and the hub is not in offline mode.
"""

from __future__ import annotations

import importlib.util
import os
import random
import sysconfig
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from steerscope.errors import InputError

SPLITS = ("fisher", "eval")
SOURCES = ("offline", "steerscope", "hf:<name>[:<config>]")
COMMON_LICENSES = Path("/usr/share/common-licenses")
LICENSE_NAMES = ("Apache-2.0", "GPL-3", "LGPL-2.1", "MPL-2.0", "GFDL-1.3", "Artistic", "CC0-1.0")

PARAGRAPHS = (
    "Every Saturday morning the market fills the square behind the town hall. The first stalls "
    "go up before sunrise, when the cobblestones are still wet from the street sweeper. By eight "
    "o'clock there are crates of apples, heaps of cabbages, buckets of cut flowers and a van that "
    "sells nothing but cheese. Regular customers know which farmer has the sweetest strawberries "
    "and which baker sells out of rye bread first. Children drift towards the man who sharpens "
    "knives on a foot-powered wheel, because the sparks are better than anything on television.",
    "Learning to ride a bicycle as an adult is mostly a matter of trusting speed. At walking pace "
    "the bike wobbles and every small correction feels too large, but once the wheels are turning "
    "quickly the whole machine steadies itself. Most teachers suggest lowering the saddle so that "
    "both feet reach the ground, removing the pedals, and gliding down a gentle slope until "
    "balancing feels natural. Only then do the pedals go back on. After a week of practice in an "
    "empty car park, many beginners are surprised to find themselves riding to work.",
    "The power went out just as the soup began to boil. For a moment the kitchen was silent "
    "except for the fridge shuddering to a stop. Someone found candles in the drawer under the "
    "sink, and someone else remembered the camping stove in the shed. We ate by the window, "
    "watching the street, where every house was dark and neighbours stood in doorways with "
    "torches, asking each other whether they had heard anything. When the lights returned two "
    "hours later, nobody rushed to turn the television back on.",
    "Bread needs less effort than people think, but it does need time. Flour, water, salt and a "
    "little yeast are mixed into a shaggy dough and left alone for an hour. A few folds, spaced "
    "half an hour apart, do the work that long kneading used to do. The dough then rests overnight "
    "in a cool place, slowly developing flavour. In the morning it is shaped, allowed to rise once "
    "more, and baked in a very hot oven. The smell alone is worth the wait.",
    "Our neighbour's cat has decided that our house is also his house. He arrives most evenings "
    "at the back door, complains loudly until someone lets him in, and then inspects every room "
    "as if checking for changes. He has a favourite chair, which nobody else is allowed to use "
    "while he is in it. We have never fed him, at least not officially. When his owner calls him "
    "from across the fence, he waits a long, dignified minute before strolling home.",
    "The night train left the city a little after ten. The compartment had four narrow bunks, a "
    "tiny sink, and a window that could be opened just enough to let in the cold air. For the "
    "first hour the lights of suburbs and small stations slid past; after that there was only "
    "darkness and the steady rhythm of the rails. Sometime before dawn the train stopped at a "
    "border, and uniformed officers walked the corridor with torches. By breakfast we were "
    "crossing a valley covered in snow.",
    "Painting a room always takes twice as long as planned, and most of that time has nothing to "
    "do with paint. Furniture has to be moved or covered, holes in the plaster filled and sanded, "
    "and edges carefully taped. The walls themselves go quickly: a roller covers a large area in "
    "minutes, and the second coat is even faster. Then comes the slow work of cutting in around "
    "windows and skirting boards with a small brush. Removing the tape at the end is the most "
    "satisfying moment of the whole job.",
    "The public library on our street opened in an old post office. The high counter where people "
    "once bought stamps now holds returned books, and the sorting room has become a reading room "
    "with long tables and green lamps. On weekday afternoons it fills with students doing "
    "homework, retired people reading newspapers, and toddlers listening to stories on a carpet "
    "in the corner. The librarian knows most visitors by name and will happily order any book "
    "from another branch if you ask.",
    "A good walking route does not need mountains. Ours starts at the end of the bus line, follows "
    "a stream through a strip of woodland, crosses two fields by way of wooden stiles, and climbs "
    "a low hill with a view over three villages. At the top there is a bench, usually occupied by "
    "someone eating sandwiches. The whole loop takes about three hours at an easy pace. In spring "
    "the fields are full of lambs, and in autumn the path is thick with fallen leaves.",
    "Moving house teaches you exactly how much you own. Every drawer holds a surprising number of "
    "things, and every cupboard seems to contain a box that has not been opened since the last "
    "move. Packing starts carefully, with labelled boxes and wrapped plates, and ends in a rush, "
    "with shoes, cables and kitchen utensils thrown together in whatever bag is nearest. On the "
    "first night in the new place, the only items anyone can find are the kettle and a single "
    "spoon.",
    "My grandmother wrote letters long after everyone else had switched to phones. Her envelopes "
    "were always thick, filled with several pages in blue ink, a newspaper cutting or two, and "
    "sometimes a pressed flower from her garden. She wrote about the weather, her neighbours, the "
    "price of potatoes, and whatever book she was reading. Her handwriting sloped steeply to the "
    "right, and it took practice to read. I kept every one of them in a shoebox, and I still "
    "reread them on rainy days.",
    "The school concert began twenty minutes late because the piano had been moved and nobody "
    "could find the key to the music room. Parents squeezed onto small plastic chairs, holding "
    "phones up to record. The youngest class sang two songs about the seasons, mostly in unison. "
    "The brass group played a march that was loud if not always together. The highlight was a "
    "girl of about ten who played a violin solo so well that the hall fell completely silent.",
    "Winter at the seaside has its own charm. The cafes along the promenade close their terraces, "
    "the ice cream kiosks are shuttered, and the beach belongs to dog walkers and a few brave "
    "swimmers. The wind is strong enough to lean on. Waves break grey and white against the sea "
    "wall, throwing spray over the railings. Afterwards, a bowl of hot soup in one of the few "
    "restaurants still open tastes better than any meal eaten there in summer.",
    "A flat tyre on a quiet country road is a test of patience. The jack is always at the bottom "
    "of the boot, under the shopping and the picnic blanket. The wheel nuts are tighter than seems "
    "possible, and the spare tyre turns out to be a thin temporary one that should not be driven "
    "faster than fifty miles an hour. Still, after half an hour of effort and muddy knees, the car "
    "is moving again, and the rest of the journey feels like a small victory.",
    "Keeping a diary does not require anything profound. Many people simply note what they ate, "
    "who they saw, and what the weather was like. Years later, these small details are exactly "
    "what brings a period of life back into focus. Reading an old entry about a missed bus or an "
    "argument over dinner can recall an entire season, with its worries and its jokes. The "
    "important thing is to write a little every day, even when nothing seems to have happened.",
    "The waiting room at the doctor's surgery has the same magazines it had five years ago. "
    "Patients sit in a loose circle, avoiding eye contact, while a screen on the wall shows "
    "advice about washing hands and getting enough sleep. Every few minutes a name is called, "
    "someone stands up with visible relief, and the rest of the room shifts slightly. Children "
    "play with a box of wooden toys in the corner, and an elderly man reads his newspaper from "
    "the first page to the last.",
    "Tea tastes best when the water is right. For black tea, the water should be freshly boiled "
    "and poured straight onto the leaves, which then steep for three to five minutes. Green tea "
    "prefers cooler water, left to stand for a minute or two after boiling, otherwise it turns "
    "bitter. Loose leaves have more room to unfold than those packed into bags, and a warmed pot "
    "keeps the temperature steady. Milk, sugar and lemon are matters of taste, and people argue "
    "about them with surprising passion.",
    "Our football team has not won a match since October, but the supporters keep coming. On "
    "Sunday afternoons about two hundred people stand along the rail of the small ground, "
    "drinking tea from paper cups and shouting advice that the players cannot hear. The pitch "
    "slopes noticeably towards one corner, which the home side claims as an advantage. When the "
    "team finally scored last week, a late goal from a corner kick, the celebration could be "
    "heard from the other side of the river.",
    "Growing tomatoes on a balcony is easier than it sounds. A large pot, good compost, a sunny "
    "position and a cane for support are almost all that is needed. The plants want regular "
    "water, especially in hot weather, and a feed every week once the first flowers appear. Side "
    "shoots that grow between the main stem and the leaves should be pinched out so the plant "
    "puts its energy into fruit. By late summer, even a small balcony can produce more tomatoes "
    "than one household can eat.",
    "The bus to the city centre is supposed to come every twelve minutes, but it usually arrives "
    "in pairs. Regular passengers have learned to read the signs: a crowd at the stop means a "
    "long wait, while an empty shelter means one has just left. In the morning the bus is full of "
    "students with headphones and office workers checking emails. In the evening it is quieter, "
    "and the driver sometimes waits an extra moment for someone running down the street with "
    "shopping bags.",
    "Camping for the first time, we discovered how much of the day is spent on small tasks. "
    "Putting up the tent took an hour and a heated discussion about which pole went where. "
    "Collecting water, lighting the stove, cooking pasta and washing the single pot filled the "
    "evening. Then it got dark earlier than expected, and we sat outside with torches, listening "
    "to owls and the rustle of something small in the grass. The next morning, the coffee "
    "tasted better than any we had made at home.",
    "The hardware shop on the corner has been run by the same family for three generations. It "
    "sells everything from single screws to garden hoses, stored in hundreds of small wooden "
    "drawers behind the counter. If you describe a problem, the owner will listen, disappear "
    "into the back, and return with exactly the right part and advice on how to fit it. Prices "
    "are sometimes a little higher than at the big store outside town, but nobody there would "
    "spend ten minutes explaining how to fix a dripping tap.",
    "Saving money usually starts with noticing where it goes. Writing down every purchase for a "
    "month can be eye-opening: the daily coffee, the subscriptions nobody uses, the snacks bought "
    "on the way home. None of these is large on its own, but together they add up. Many people "
    "find it easier to save when a fixed amount moves to a separate account on payday, before "
    "there is a chance to spend it. Small, automatic habits tend to last longer than strict "
    "budgets.",
    "The museum's new exhibition is about the history of clocks. The first room shows sundials "
    "and water clocks from ancient cities, the second has the heavy iron mechanisms that once "
    "ran church towers, and the third is filled with pocket watches so small and detailed that "
    "visitors lean close to the glass. In the final room, dozens of clocks tick at slightly "
    "different speeds, and every hour they chime together in a long, uneven chorus that makes "
    "everyone stop and listen.",
    "Doing laundry for a family is a cycle that never quite ends. There is always one basket "
    "waiting to be washed, another waiting to be dried, and a third waiting to be folded and put "
    "away. Socks disappear in pairs and return alone. A single red shirt can turn a whole load of "
    "white towels pink. On sunny days, hanging the washing outside feels almost pleasant, with "
    "sheets moving in the breeze; on rainy days every radiator in the house is covered with "
    "damp clothes.",
    "Learning a new language as an adult involves a lot of embarrassment. You order the wrong dish "
    "because you misread the menu, you answer a question nobody asked, and you mix up words that "
    "sound almost the same. Yet each small mistake teaches something. After a few months, "
    "conversations that once felt impossible become merely difficult, and one day you realise "
    "you have understood an entire radio programme without translating in your head. That moment "
    "makes all the confusion worthwhile.",
    "Early mornings in the city have a calm that disappears by eight o'clock. Delivery vans unload "
    "outside shops, street cleaners hose down the pavements, and the first cafes put out their "
    "chairs. Runners pass along the river, and a few people wait at bus stops with their collars "
    "turned up. Pigeons gather near the bakery, where a side door is propped open and the smell "
    "of fresh pastry drifts out. Within an hour, the traffic has thickened and the quiet is gone.",
    "A birthday party for six-year-olds requires planning on the scale of a small military "
    "operation. There must be enough food for children who will eat almost none of it, games "
    "that fill exactly the right amount of time, and a cake that survives being carried across "
    "the room. Someone will cry, usually over a balloon. Someone else will hide under the table "
    "and refuse to come out. By the end, the floor is covered in crumbs and paper, and everyone "
    "agrees it was a great success.",
    "Fixing a bicycle chain that has come off looks messy but is quick. Shift to the smallest gear "
    "at the back, hook the chain over the lowest teeth of the rear wheel, then lay it over the "
    "front ring at the bottom and slowly turn the pedals backwards. The chain climbs back into "
    "place by itself. The only lasting damage is to your fingers, which will be black with oil "
    "for the rest of the day no matter how much soap you use.",
    "The post office in the village also sells bread, newspapers and birthday cards. Its single "
    "counter is staffed by a woman who knows when everyone's pension arrives and whose parcel is "
    "overdue. Queues move slowly because every transaction includes a conversation about health, "
    "weather or grandchildren. Nobody seems to mind. When the company that owns the building "
    "announced it might close, half the village signed a petition within a week, and the shop is "
    "still open.",
    "Snow fell all night, and by morning the town had gone quiet. Schools stayed closed, the "
    "buses stopped running, and the main road was a white field marked only by a few footprints. "
    "Children dragged sledges towards the park, where the hill behind the tennis courts became "
    "crowded by nine o'clock. Adults who had planned to work from home kept glancing at the "
    "window. By afternoon, every garden had a snowman, some with carrot noses, others with "
    "scarves borrowed from reluctant parents, and one wearing a pair of sunglasses.",
    "The first day at a new job is mostly spent learning where things are. There is a tour of the "
    "building, a desk that is not quite ready, and a computer that needs three passwords before "
    "it will do anything useful. Colleagues introduce themselves faster than their names can be "
    "remembered. Lunch is a careful affair, spent working out which table is for which team. By "
    "the end of the day, the most important discovery is usually the location of the best coffee "
    "machine.",
    "A second-hand bookshop rewards anyone willing to browse slowly. The shelves are arranged "
    "according to a system only the owner fully understands, with cookery books next to travel "
    "guides and poetry hidden behind a stack of atlases. Some books still carry old bus tickets "
    "used as bookmarks, or inscriptions written decades ago for birthdays and graduations. It is "
    "almost impossible to leave without buying something, even if it is only a paperback "
    "costing less than a cup of tea.",
    "Making soup from whatever is left in the fridge is a useful skill. An onion, a couple of "
    "carrots, a tired stick of celery and a potato make a good start. They are chopped, softened "
    "in a little oil, covered with stock and simmered until tender. Leftover beans, a handful of "
    "rice or some pasta can go in too. A squeeze of lemon and plenty of pepper at the end lift "
    "the flavour. Served with toast, it makes a perfectly respectable dinner.",
    "Piano lessons on Thursday evenings were the fixed point of my childhood week. The teacher "
    "lived in a narrow house full of plants and sheet music, and her cat slept on top of the "
    "piano throughout every lesson. She was patient with wrong notes but not with excuses. Each "
    "week began with scales, which I hated, and ended with a piece of my own choice, which I "
    "loved. Years later, I still play the first piece she taught me whenever I sit at a piano.",
    "A small pond can turn an ordinary garden into a busy place. Within weeks of filling it, "
    "water beetles arrive, followed by dragonflies in summer and frogs in early spring. Birds "
    "come to drink and bathe at the shallow edge. The water needs a few plants to stay clear, "
    "and a sloping side so that any animal that falls in can climb out. Sitting beside it on a "
    "warm evening, watching insects skim across the surface, is an easy way to lose an hour.",
    "The thunderstorm arrived suddenly after a hot, heavy afternoon. The sky turned a strange "
    "yellow, the wind picked up dust from the road, and then the first crack of thunder rattled "
    "the windows. Rain came down so hard that the gutters overflowed within minutes. We counted "
    "the seconds between each flash and the thunder that followed, watching the storm move away "
    "across the hills. Afterwards the air smelled of wet earth and felt cool for the first time "
    "in days.",
    "A wedding in the countryside depends heavily on the weather. Ours had a marquee in a field, "
    "long tables decorated with jam jars of wild flowers, and a band that played until the "
    "farmer politely asked them to stop. An uncle gave a speech that went on far too long, and "
    "a small niece fell asleep under the table during the dancing. It rained briefly during the "
    "photographs, which is why everyone in them is holding an umbrella and laughing.",
    "Losing an umbrella is one of the small certainties of city life. It is left on the train, "
    "hung on the back of a cafe chair, or propped against a desk at the end of a dry afternoon. "
    "Lost property offices keep shelves full of them, in every colour and state of repair. Some "
    "people buy cheap ones on purpose, expecting to lose them within a month. Others carry the "
    "same sturdy umbrella for years and guard it carefully, as if it were a family heirloom.",
    "Rain began just as the picnic blankets were spread out. At first it was only a few large "
    "drops, and everyone pretended not to notice. Then the sky darkened and the shower became a "
    "downpour. We gathered the food in armfuls and ran for the shelter of an old oak tree, where "
    "we ate sandwiches standing up, laughing at how wet we were. Twenty minutes later the sun came "
    "out again, the grass steamed, and the day turned into one of the best of the summer.",
)


def generic_documents(source: str = "offline") -> list[tuple[str, str]]:
    """The (name, text) documents behind `source`: "offline" (everything below) or "steerscope"."""
    if source == "steerscope":
        return [("steerscope paragraphs", "\n\n".join(PARAGRAPHS))]
    if source != "offline":
        raise InputError(f"source must be one of {SOURCES}, got {source!r}")
    return list(_offline_documents())


@lru_cache(maxsize=1)
def _offline_documents() -> tuple[tuple[str, str], ...]:
    documents = [("steerscope paragraphs", "\n\n".join(PARAGRAPHS))]
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data
        topics = {}
    if topics:
        documents.append(("pydoc_data.topics", "\n\n".join(topics[key] for key in sorted(topics))))
    python_license = Path(sysconfig.get_path("stdlib")) / "LICENSE.txt"
    if python_license.is_file():
        documents.append(("Python LICENSE.txt", python_license.read_text(errors="replace")))
    for name in LICENSE_NAMES:
        path = COMMON_LICENSES / name
        if path.is_file():
            documents.append((f"common-licenses/{name}", path.read_text(errors="replace")))
    return tuple(documents)


def generic_windows(
    tokenizer: Any,
    n: int,
    window: int = 128,
    seed: int = 0,
    *,
    split: str = "fisher",
    source: str = "offline",
    bos: bool = False,
    texts: Sequence[str] | None = None,
) -> list[list[int]]:
    """`n` windows of exactly `window` token ids of generic text, deterministic by seed.

    Each document is tokenized on its own and cut into consecutive non-overlapping windows
    (the tail is dropped); identical windows are kept once. Windows then alternate between the
    splits, so "fisher" and "eval" never share a window whatever the seed. With `bos`, each
    window starts with the tokenizer's BOS token followed by `window - 1` text tokens.
    `tokenizer` may also be anything with a `.tokenizer` (e.g. a steerscope `Model`). `texts`
    replaces `source` with the caller's documents (e.g. a `DataSuite`'s `TextData.texts()`).
    """
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    if window < 2:
        raise InputError(f"window must be at least 2 tokens, got {window}")
    if n < 0:
        raise InputError(f"n must be non-negative, got {n}")
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    prefix: list[int] = []
    if bos:
        if tokenizer.bos_token_id is None:
            raise InputError("bos=True but the tokenizer has no BOS token")
        prefix = [tokenizer.bos_token_id]
    length = window - len(prefix)
    if texts is not None:
        documents = list(texts)
    elif source.startswith("hf:"):
        documents = _hf_texts(source, tokenizer, needed_tokens=2 * (n + 1) * length)
    else:
        documents = [text for _, text in generic_documents(source)]
    pool = _split_pool(tokenizer, documents, length, split)
    if n > len(pool):
        raise InputError(
            f"{'the texts given' if texts is not None else f'source {source!r}'} gave {len(pool)} {split} windows of {window} tokens, asked for {n}"
        )
    return [prefix + list(chunk) for chunk in random.Random(seed).sample(pool, n)]


def count_windows(
    tokenizer: Any, texts: list[str], window: int, split: str = "fisher", bos: bool = False
) -> int:
    """How many windows `generic_windows(tokenizer, n, window, split=split, bos=bos, texts=texts)`
    can give: the largest `n` it takes."""
    return len(_split_pool(getattr(tokenizer, "tokenizer", tokenizer), list(texts), window - bos, split))


def _split_pool(tokenizer: Any, texts: list[str], length: int, split: str) -> list[tuple[int, ...]]:
    """The distinct `length`-token windows of one split: windows alternate between the splits."""
    return _split_windows(tokenizer, texts, length)[SPLITS.index(split) :: len(SPLITS)]


def _split_windows(tokenizer: Any, texts: list[str], length: int) -> list[tuple[int, ...]]:
    """All distinct non-overlapping `length`-token windows of the texts, in document order."""
    windows: dict[tuple[int, ...], None] = {}
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        for start in range(0, len(ids) - length + 1, length):
            windows.setdefault(tuple(ids[start : start + length]), None)
    return list(windows)


def _hf_texts(source: str, tokenizer: Any, needed_tokens: int) -> list[str]:
    """One document streamed from a Hugging Face data set's "text" column until enough tokens."""
    name, _, config = source.removeprefix("hf:").partition(":")
    if not name:
        raise InputError(f"source must look like 'hf:<name>[:<config>]', got {source!r}")
    if importlib.util.find_spec("datasets") is None:
        raise InputError(f"source {source!r} needs the `datasets` package; use source='offline'")
    offline = {os.environ.get(var, "").lower() for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    if offline & {"1", "true", "yes", "on"}:
        raise InputError(
            f"source {source!r} needs the Hugging Face hub, which is set offline; use source='offline'"
        )
    import datasets

    try:
        stream = datasets.load_dataset(name, config or None, split="train", streaming=True)
        texts, total = [], 0
        for row in stream:
            text = row.get("text") or ""
            if text.strip():
                texts.append(text)
                total += len(tokenizer(text, add_special_tokens=False)["input_ids"])
            if total >= needed_tokens:
                break
    except Exception as error:  # network, missing data set, missing column
        raise InputError(f"could not stream {source!r} from the Hugging Face hub: {error}") from error
    return ["\n\n".join(texts)]  # rows are often single lines, shorter than a window
