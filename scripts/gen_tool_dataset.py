#!/usr/bin/env python3
"""Regenerates the templated part of data/datasets/tool_calling.json, or checks it.

The hand-written examples (kind "contextual", "no_tool") are kept as they are; this script
replaces the examples whose kind starts with "templated_" by:
- image requests: a subject (a head such as "a giraffe" and, mostly, a complement such
  as "on a rooftop") asked for with one of many phrasings, in Spanish and English, and
  answered with a generate_image call whose prompt is the subject as the request wrote it
  (so what the model learns is to copy the request's words, not to recall a subject);
- ordinary turns about the same subjects in the styles that fooled the model into calls
  (describe, write, summarise, explain, tips, lists, questions about drawing, painting and
  photography that do not ask for a picture), and the short ordinary turns below.
It is deterministic (no randomness), so rerunning it gives the same file.

It refuses (exits with an error) any overlap with the held-out sets:
- data/eval/tool_heldout.json: no content word of a held-out subject may appear in the
  prompt of any training call, no held-out prompt may be a training prompt, and no
  held-out request may use a training phrasing;
- data/datasets/tool_calling_eval.json (the older set): no word of 4+ letters of its image
  requests in a training call's prompt, and none of its prompts in training.

    python3 scripts/gen_tool_dataset.py            # rewrite the dataset
    python3 scripts/gen_tool_dataset.py --check    # only check the dataset as it is
"""
import json
import math
import pathlib
import re
import sys
import unicodedata

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATASET = ROOT / "data/datasets/tool_calling.json"
HELDOUT = ROOT / "data/eval/tool_heldout.json"
OLD_EVAL = ROOT / "data/datasets/tool_calling_eval.json"

# Image requests per language, and ordinary turns about subjects per language.
REQUESTS_PER_LANG = 480
ORDINARY_PER_LANG = 480

# The words src/text.rs leaves out when comparing texts (STOP_WORDS), folded.
STOP_WORDS = set("""a an and are as at be by can did do does for from had has have how i in is
it its me my of on or tell that the their them there these they this to was we were what when
where which who why will with you your al como con cual de del dime el en es esta este la las
lo los me mi para pero por que se si su sus te tu un una unas unos y o""".split())

# Ways to ask for a picture: "{s}" is the subject.
REQUESTS = {
    "es": [
        "Genera una imagen de {s}", "Dibuja {s}", "Quiero una imagen de {s}",
        "Hazme un dibujo de {s}", "Pinta {s}", "Crea una imagen de {s}",
        "¿Puedes dibujar {s}?", "Muéstrame una imagen de {s}", "Dibújame {s}",
        "Me gustaría una foto de {s}", "Necesito una ilustración de {s}",
        "Por favor, pinta {s}", "Haz un dibujo de {s}", "Quiero un dibujo de {s}, por favor",
        "Crea un dibujo de {s}", "¿Me dibujas {s}?", "Genera una foto de {s}",
        "Necesito una imagen de {s} para clase", "Dibuja, por favor, {s}",
        "¿Podrías pintar {s}?", "Hazme una imagen de {s}", "Enséñame una imagen de {s}",
        "Crea una ilustración de {s} para mi blog", "Haz una foto de {s}",
        "¿Me pintas {s}?", "Pinta para mí {s}", "Genera una ilustración de {s}",
        "Una imagen de {s}, por favor", "Me haría falta un dibujo de {s}",
        "dibuja {s}", "quiero una foto de {s}", "Oye, dibuja {s}",
        "¿Me generas una imagen de {s}?", "Crea una imagen que muestre {s}",
        "Dibuja una escena con {s}", "Haz una ilustración que muestre {s}",
        "Quiero que dibujes {s}", "¿Se puede tener una imagen de {s}?",
        "Genera un dibujo con {s}, gracias", "Pinta una imagen de {s} para mi hermano",
    ],
    "en": [
        "Generate an image of {s}", "Draw {s}", "I want a picture of {s}", "Paint {s}",
        "Create an image of {s}", "Can you draw {s}?", "Show me a picture of {s}",
        "Draw me {s}", "Make an image of {s}", "Sketch {s}", "I'd like a painting of {s}",
        "Please draw {s}", "Could you create a picture of {s}?", "Make a drawing of {s}",
        "I need a picture of {s} for a school project", "Draw {s}, please",
        "can you make me an image of {s}", "Give me an illustration of {s}",
        "Paint me a picture of {s}", "Please generate a picture of {s}",
        "An image of {s}, please", "I'd love a drawing of {s}", "Would you draw {s} for me?",
        "Create a cartoon of {s}", "Draw a picture showing {s}", "Generate a photo of {s}",
        "Could you sketch {s}?", "Design an image of {s}", "Make me a painting of {s}",
        "I'm writing a story, draw {s}", "Show me {s} in a picture", "draw {s}",
        "make a picture of {s} thanks", "Hey, paint {s}", "Create a scene with {s}",
        "I want you to draw {s}", "Produce an image of {s} for my blog",
        "Could I have a picture of {s}?", "Generate a drawing with {s}, thanks",
        "Paint a picture of {s} for my brother",
    ],
}

# Heads: (Spanish, English). None shares a content word with a held-out subject (checked).
HEADS = [
    ("un elefante", "an elephant"), ("una jirafa", "a giraffe"), ("un canguro", "a kangaroo"),
    ("un pingüino", "a penguin"), ("un camello", "a camel"), ("una tortuga", "a turtle"),
    ("un conejo", "a rabbit"), ("una ardilla", "a squirrel"), ("un lobo", "a wolf"),
    ("una rana", "a frog"), ("un pato", "a duck"), ("una cabra", "a goat"),
    ("un cerdo", "a pig"), ("un ratón", "a mouse"), ("un delfín", "a dolphin"),
    ("un loro", "a parrot"), ("un flamenco", "a flamingo"), ("un cocodrilo", "a crocodile"),
    ("una araña", "a spider"), ("una abeja", "a bee"), ("un caracol", "a snail"),
    ("un cangrejo", "a crab"), ("un pulpo", "an octopus"), ("una foca", "a seal"),
    ("un ciervo", "a deer"), ("un mapache", "a raccoon"), ("un gorila", "a gorilla"),
    ("un hipopótamo", "a hippo"), ("un rinoceronte", "a rhino"), ("un koala", "a koala"),
    ("un pavo real", "a peacock"), ("un cisne", "a swan"), ("un escarabajo", "a beetle"),
    ("un mono", "a monkey"), ("un cocinero", "a chef"), ("un piloto", "a pilot"),
    ("un caballero", "a knight"), ("una princesa", "a princess"), ("un payaso", "a clown"),
    ("un granjero", "a farmer"), ("una científica", "a scientist"),
    ("una bailarina", "a dancer"), ("un pintor", "a painter"), ("un músico", "a musician"),
    ("un soldado", "a soldier"), ("una enfermera", "a nurse"), ("un bebé", "a baby"),
    ("un rey", "a king"), ("una reina", "a queen"), ("un ninja", "a ninja"),
    ("un vaquero", "a cowboy"), ("una maestra", "a teacher"), ("una guitarra", "a guitar"),
    ("una tetera", "a teapot"), ("una lámpara", "a lamp"), ("un reloj", "a clock"),
    ("un paraguas", "an umbrella"), ("una cometa", "a kite"), ("un sofá", "a sofa"),
    ("un violín", "a violin"), ("un tambor", "a drum"), ("un camión", "a truck"),
    ("una moto", "a motorbike"), ("un helicóptero", "a helicopter"),
    ("un cohete", "a rocket"), ("un submarino", "a submarine"), ("un tractor", "a tractor"),
    ("un molino", "a windmill"), ("una iglesia", "a church"), ("una torre", "a tower"),
    ("una fuente", "a fountain"), ("una cocina", "a kitchen"),
    ("una biblioteca", "a library"), ("un estadio", "a stadium"), ("una granja", "a farm"),
    ("una cabaña", "a cabin"), ("una tarta", "a cake"), ("una pizza", "a pizza"),
    ("una cesta de manzanas", "a basket of apples"), ("un yate", "a yacht"),
    ("una tienda de campaña", "a tent"), ("un buzón", "a mailbox"),
    ("un trineo", "a sled"), ("una ballena", "a whale"), ("un avión", "a plane"),
    # Rare words, which the tokenizer splits into several pieces: copying one means going
    # on to the word's end, not stopping after as many tokens as a common word has.
    ("un ajolote", "an axolotl"), ("un pangolín", "a pangolin"), ("un narval", "a narwhal"),
    ("un quokka", "a quokka"), ("un tapir", "a tapir"), ("un carpincho", "a capybara"),
    ("un wómbat", "a wombat"), ("una marmota", "a marmot"), ("un okapi", "an okapi"),
    ("un ornitorrinco", "a platypus"), ("un camaleón", "a chameleon"),
    ("un tucán", "a toucan"), ("un armadillo", "an armadillo"),
    ("un puercoespín", "a porcupine"), ("una salamandra", "a salamander"),
    ("un colibrí", "a hummingbird"), ("un lémur", "a lemur"), ("un suricato", "a meerkat"),
    ("una iguana", "an iguana"), ("una morsa", "a walrus"), ("un clavecín", "a harpsichord"),
    ("un zepelín", "a zeppelin"), ("un gramófono", "a gramophone"),
    ("un telescopio", "a telescope"), ("un tiovivo", "a carousel"),
    ("un xilófono", "a xylophone"), ("un trombón", "a trombone"),
    ("un monociclo", "a unicycle"), ("una góndola", "a gondola"),
    ("un invernadero", "a greenhouse"), ("un acueducto", "an aqueduct"),
    ("un astrolabio", "an astrolabe"), ("un caleidoscopio", "a kaleidoscope"),
]

# Complements: (Spanish, English), also checked against the held-out subjects.
COMPLEMENTS = [
    ("en un tejado", "on a rooftop"), ("al amanecer", "at dawn"),
    ("en un campo de trigo", "in a wheat field"), ("en un parque", "in a park"),
    ("dentro de una cueva", "inside a cave"), ("en una isla", "on an island"),
    ("al lado de un lago", "next to a lake"), ("en la niebla", "in the fog"),
    ("en el espacio", "in space"), ("bajo el agua", "underwater"),
    ("en un jardín de rosas", "in a rose garden"),
    ("en una fiesta de cumpleaños", "at a birthday party"),
    ("en un monopatín", "on a skateboard"), ("con un gorro verde", "with a green hat"),
    ("con un paraguas amarillo", "with a yellow umbrella"),
    ("con una mochila azul", "with a blue backpack"),
    ("sujetando un farol", "holding a lantern"), ("bailando", "dancing"),
    ("saltando", "jumping"), ("nadando", "swimming"), ("cantando", "singing"),
    ("corriendo", "running"), ("volando una cometa", "flying a kite"),
    ("pintando una valla", "painting a fence"), ("bebiendo té", "drinking tea"),
    ("en una plaza pequeña", "in a small square"), ("en un museo", "in a museum"),
    ("en un aula", "in a classroom"), ("en una balsa", "on a raft"),
    ("bajo una palmera", "beside a palm"), ("en invierno", "in winter"),
    ("en primavera", "in spring"), ("de color morado", "in purple"),
    ("de chocolate", "of chocolate"), ("con patines", "on roller skates"),
    ("en una estación de esquí", "at a ski resort"), ("en un rastro", "at a car boot sale"),
    ("encima de una nube", "on top of a cloud"),
    ("cubierto de musgo", "covered in moss"), ("rodeado de bambú", "among bamboo"),
    ("cerca de un géiser", "near a geyser"), ("en un laberinto", "in a labyrinth"),
    ("en un glaciar", "on a glacier"), ("con un monóculo", "with a monocle"),
    ("con una sombrilla", "holding a parasol"), ("en una hamaca", "in a hammock"),
    ("en una cama elástica", "on a trampoline"),
    ("haciendo malabares con naranjas", "juggling oranges"), ("cerca de una hoguera", "beside a campfire"),
]

# Ordinary turns about a subject, in the styles that fooled the model: (question, answer);
# "{s}" is the subject, "{S}" the same with a capital.
ASKS = {
    "es": [
        ("Describe con palabras {s}.", "{S}: imagina la forma, los colores y lo que hay alrededor. Te lo cuento con palabras, sin imagen."),
        ("Escribe un poema corto sobre {s}.", "Aquí va un poema:\n{S} en calma,\nun momento que se queda,\ny la tarde pasa."),
        ("Escribe una historia corta sobre {s}.", "Había una vez {s}. Cada día aprendía algo nuevo, y al final encontró lo que buscaba."),
        ("Resume en una frase una historia sobre {s}.", "Es la historia de {s} que vive una pequeña aventura y vuelve a casa cambiado."),
        ("Explica qué tiene de especial {s}.", "{S} llama la atención por sus detalles y por la historia que sugiere."),
        ("Dame tres ideas sobre {s}.", "Tres ideas: observa a {s} con calma, piensa en su historia e imagina su entorno."),
        ("Haz una lista de tres palabras que describan {s}.", "Tres palabras: curioso, tranquilo, luminoso."),
        ("¿Qué colores usarías para pintar {s}?", "Para {s} usaría tonos suaves y un color fuerte que destaque."),
        ("¿Cómo aprendo a dibujar {s}?", "Empieza con formas simples, luego añade los detalles y practica cada día."),
        ("Dame consejos para fotografiar {s}.", "Busca buena luz, acércate sin prisa y prueba varios encuadres."),
        ("Cuéntame un chiste sobre {s}.", "¿Qué le dijo {s} al espejo? ¡Qué bien me veo hoy!"),
        ("Inventa un título para un cuento sobre {s}.", "Un título: «El gran día de {s}»."),
        ("Escribe un mensaje a un amigo sobre {s}.", "¡Hola! Hoy he visto {s} y me he acordado de ti. ¡Un abrazo!"),
        ("Recomiéndame una película sobre {s}.", "No conozco una sobre {s} exactamente, pero una comedia de aventuras te podría gustar."),
    ],
    "en": [
        ("Describe in words {s}.", "{S}: picture the shape, the colours and what is around it. I'll tell you in words, no image."),
        ("Write a short poem about {s}.", "Here is a poem:\n{S} at rest,\na moment that stays,\nand the evening goes by."),
        ("Write a short story about {s}.", "Once upon a time there was {s}. Every day it learned something new, and in the end it found what it was looking for."),
        ("Summarize in one sentence a story about {s}.", "It is the story of {s} who has a small adventure and comes home changed."),
        ("Explain what makes {s} special.", "{S} stands out for its details and for the story it suggests."),
        ("Give me three ideas about {s}.", "Three ideas: look at {s} calmly, think about its story and imagine its surroundings."),
        ("List three words that describe {s}.", "Three words: curious, calm, bright."),
        ("What colours would you use to paint {s}?", "For {s} I would use soft tones and one strong colour that stands out."),
        ("How do I learn to draw {s}?", "Start with simple shapes, then add the details and practise every day."),
        ("Give me tips for photographing {s}.", "Look for good light, get close slowly and try several framings."),
        ("Tell me a joke about {s}.", "What did {s} say to the mirror? Looking good today!"),
        ("Make up a title for a tale about {s}.", "A title: \"The big day of {s}\"."),
        ("Write a message to a friend about {s}.", "Hi! Today I saw {s} and thought of you. Take care!"),
        ("Recommend a film about {s}.", "I don't know one about {s} exactly, but an adventure comedy might suit you."),
    ],
}

# Short ordinary turns: (question, answer, language). None asks for a picture, several
# mention pictures, drawing or painting without asking for one.
ORDINARY = [
    ("Buen día", "¡Buen día! ¿En qué puedo ayudarte?", "es"),
    ("Hola, ¿qué tal?", "¡Hola! Todo bien. ¿Qué quieres saber?", "es"),
    ("Saludos", "¡Saludos! Aquí estoy para ayudarte.", "es"),
    ("Hasta luego", "¡Hasta luego! Vuelve cuando quieras.", "es"),
    ("Adiós", "¡Adiós! Que tengas un buen día.", "es"),
    ("Muchas gracias", "¡De nada! Me alegra ayudar.", "es"),
    ("¿Cuántas horas tiene un día?", "Un día tiene veinticuatro horas.", "es"),
    ("¿Cuántos meses tiene un año?", "Un año tiene doce meses.", "es"),
    ("¿Cuántas patas tiene un perro?", "Un perro tiene cuatro patas.", "es"),
    ("¿Cuál es la capital de Portugal?", "La capital de Portugal es Lisboa.", "es"),
    ("¿Cuál es la capital de Alemania?", "La capital de Alemania es Berlín.", "es"),
    ("¿Cuál es la capital de Japón?", "La capital de Japón es Tokio.", "es"),
    ("¿Quién pintó el Guernica?", "El Guernica lo pintó Pablo Picasso.", "es"),
    ("¿Quién inventó la bombilla?", "Thomas Edison desarrolló la bombilla práctica.", "es"),
    ("¿Qué es un dibujo?", "Un dibujo es una imagen hecha con líneas sobre una superficie.", "es"),
    ("¿Qué es una pintura?", "Una pintura es una obra hecha con pigmentos sobre una superficie.", "es"),
    ("¿Qué es una cámara?", "Una cámara es un aparato que captura imágenes con luz.", "es"),
    ("Me gusta dibujar", "¡Qué bien! Dibujar ayuda a observar con atención.", "es"),
    ("Ayer pinté mi habitación", "¡Qué trabajo! Un color nuevo cambia mucho un cuarto.", "es"),
    ("¿Por qué llueve?", "Llueve cuando el vapor de las nubes se condensa en gotas pesadas.", "es"),
    ("¿Por qué el mar es salado?", "El mar es salado porque los ríos le llevan sales de las rocas.", "es"),
    ("Describe una ciudad", "Una ciudad es un lugar con muchas casas, calles y gente.", "es"),
    ("Describe un río", "Un río es una corriente de agua que fluye hacia el mar.", "es"),
    ("Describe una playa", "Una playa es una orilla de arena junto al mar.", "es"),
    ("Cuéntame algo sobre las abejas", "Las abejas hacen miel y polinizan las flores.", "es"),
    ("Cuéntame algo sobre los delfines", "Los delfines son mamíferos marinos muy inteligentes.", "es"),
    ("Háblame de los volcanes", "Un volcán expulsa lava, gases y ceniza del interior de la Tierra.", "es"),
    ("Explícame qué es la nieve", "La nieve es agua helada que cae en forma de copos.", "es"),
    ("Explícame qué es un planeta", "Un planeta es un cuerpo grande que gira alrededor de una estrella.", "es"),
    ("¿Qué es la luna?", "La Luna es el satélite natural de la Tierra.", "es"),
    ("¿Qué es un árbol?", "Un árbol es una planta grande con tronco, ramas y hojas.", "es"),
    ("¿Dónde viven los pingüinos?", "Los pingüinos viven sobre todo en el hemisferio sur.", "es"),
    ("¿Qué comen los caballos?", "Los caballos comen hierba, heno y grano.", "es"),
    ("¿Cómo estás?", "Estoy bien, gracias. ¿Y tú?", "es"),
    ("Resume la historia de Caperucita Roja", "Una niña visita a su abuela, un lobo la engaña y al final un cazador las salva.", "es"),
    ("Dame tres consejos para dormir mejor", "Acuéstate a la misma hora, evita pantallas antes de dormir y cena ligero.", "es"),
    ("Escribe una frase sobre el mar", "El mar guarda en sus olas el ritmo de la costa.", "es"),
    ("¿Qué es el impresionismo?", "Es un estilo de pintura del siglo XIX que busca captar la luz y el momento.", "es"),
    ("¿Quién pintó Las Meninas?", "Las Meninas las pintó Diego Velázquez en 1656.", "es"),
    ("¿Qué es la fotografía?", "La fotografía es el arte de capturar imágenes con luz sobre un sensor o una película.", "es"),
    ("Recomiéndame un libro para el verano", "Te recomiendo «La isla del tesoro», de Stevenson: aventura de principio a fin.", "es"),
    ("¿Qué serie me recomiendas?", "Depende de tus gustos; si te gusta el misterio, prueba una de detectives.", "es"),
    ("Redacta una nota para avisar de que llego tarde", "Hola, llegaré unos veinte minutos tarde. Perdona las molestias.", "es"),
    ("Escribe un correo para pedir una cita", "Buenos días: quisiera pedir una cita para la semana próxima. Un saludo.", "es"),
    ("Traduce 'buenas noches' al francés", "En francés se dice «bonne nuit».", "es"),
    ("¿Cuánto es 15 más 27?", "15 más 27 son 42.", "es"),
    ("Hoy he pintado un paisaje con acuarelas", "¡Qué bien! La acuarela es difícil; seguro que te ha quedado bonito.", "es"),
    ("Mi hermana hizo una foto preciosa del puerto", "¡Qué bonito! Un buen puerto da fotos muy especiales.", "es"),
    ("Describe el estilo de Goya", "Goya pasó de escenas luminosas a pinturas oscuras y críticas con su tiempo.", "es"),
    ("Escribe un anuncio para vender una mesa", "Se vende mesa de madera en buen estado, ideal para cocina. Precio a convenir.", "es"),
    ("Dame ideas para un regalo de cumpleaños", "Un libro, una planta o una experiencia compartida suelen gustar.", "es"),
    ("Good evening", "Good evening! How can I help you?", "en"),
    ("Hey there", "Hey! What would you like to know?", "en"),
    ("Greetings", "Greetings! I'm here to help.", "en"),
    ("See you later", "See you later! Come back any time.", "en"),
    ("Goodbye", "Goodbye! Have a nice day.", "en"),
    ("Thanks a lot", "You're welcome! Glad to help.", "en"),
    ("How many hours are in a day?", "A day has twenty-four hours.", "en"),
    ("How many months are in a year?", "A year has twelve months.", "en"),
    ("How many legs does a dog have?", "A dog has four legs.", "en"),
    ("What is the capital of Portugal?", "The capital of Portugal is Lisbon.", "en"),
    ("What is the capital of Germany?", "The capital of Germany is Berlin.", "en"),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo.", "en"),
    ("Who painted Guernica?", "Guernica was painted by Pablo Picasso.", "en"),
    ("Who invented the light bulb?", "Thomas Edison developed the practical light bulb.", "en"),
    ("What is a drawing?", "A drawing is a picture made with lines on a surface.", "en"),
    ("What is a painting?", "A painting is a work made with pigments on a surface.", "en"),
    ("What is a camera?", "A camera is a device that captures images with light.", "en"),
    ("I like drawing", "That's great! Drawing helps you look closely.", "en"),
    ("Yesterday I painted my room", "Nice work! A new colour changes a room a lot.", "en"),
    ("Why does it rain?", "It rains when water vapour in clouds condenses into heavy drops.", "en"),
    ("Why is the sea salty?", "The sea is salty because rivers carry salts from rocks into it.", "en"),
    ("Describe a city", "A city is a place with many houses, streets and people.", "en"),
    ("Describe a river", "A river is a stream of water that flows to the sea.", "en"),
    ("Describe a beach", "A beach is a sandy shore next to the sea.", "en"),
    ("Tell me something about bees", "Bees make honey and pollinate flowers.", "en"),
    ("Tell me something about dolphins", "Dolphins are very intelligent sea mammals.", "en"),
    ("Tell me about volcanoes", "A volcano throws out lava, gas and ash from inside the Earth.", "en"),
    ("Explain what snow is", "Snow is frozen water that falls as flakes.", "en"),
    ("Explain what a planet is", "A planet is a large body that orbits a star.", "en"),
    ("What is the moon?", "The Moon is the Earth's natural satellite.", "en"),
    ("What is a tree?", "A tree is a large plant with a trunk, branches and leaves.", "en"),
    ("Where do penguins live?", "Penguins live mostly in the southern hemisphere.", "en"),
    ("What do horses eat?", "Horses eat grass, hay and grain.", "en"),
    ("How are you?", "I'm fine, thank you. And you?", "en"),
    ("Summarise the story of Cinderella", "A kind young woman, mistreated by her stepfamily, goes to a ball, loses a slipper and marries the prince.", "en"),
    ("Give me three tips for sleeping better", "Go to bed at the same time, avoid screens before sleep and eat a light dinner.", "en"),
    ("Write a sentence about the sea", "The sea keeps the rhythm of the coast in its waves.", "en"),
    ("What is impressionism?", "It is a 19th-century style of painting that tries to catch light and the moment.", "en"),
    ("Who painted Las Meninas?", "Las Meninas was painted by Diego Velázquez in 1656.", "en"),
    ("What is photography?", "Photography is the art of capturing images with light on a sensor or film.", "en"),
    ("Recommend a book for the summer", "Try Treasure Island by Stevenson: adventure from start to finish.", "en"),
    ("Which series would you recommend?", "It depends on your taste; if you like mysteries, try a detective series.", "en"),
    ("Write a note saying I'll be late", "Hi, I'll be about twenty minutes late. Sorry for the trouble.", "en"),
    ("Write an email asking for an appointment", "Good morning, I would like to ask for an appointment next week. Kind regards.", "en"),
    ("Translate 'good night' into Spanish", "In Spanish it is \"buenas noches\".", "en"),
    ("What is 15 plus 27?", "15 plus 27 is 42.", "en"),
    ("Today I painted a landscape in watercolours", "Great! Watercolour is hard; I'm sure it looks lovely.", "en"),
    ("My sister took a beautiful photo of the harbour", "How nice! A harbour makes for very special photos.", "en"),
    ("Describe Goya's style", "Goya went from bright scenes to dark paintings that criticised his time.", "en"),
    ("Write an ad to sell a table", "Wooden table for sale, in good condition, ideal for a kitchen. Price negotiable.", "en"),
    ("Give me ideas for a birthday present", "A book, a plant or a shared experience usually go down well.", "en"),
]


def fold(text):
    """Lowercase without accents, for the overlap checks."""
    nfkd = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in nfkd if not unicodedata.combining(c))


def content_words(text):
    """Folded words that are not stop words (how `thau bench tools` compares subjects)."""
    return {w for w in re.findall(r"\w+", fold(text)) if w not in STOP_WORDS}


def long_words(text):
    return set(re.findall(r"\w{4,}", fold(text)))


def subjects():
    """(Spanish, English) subjects: every head once bare, then head × complement pairs in a
    fixed order that walks both lists, until there are enough."""
    out = [(h_es, h_en) for h_es, h_en in HEADS]
    # A stride through the complements that shares no factor with their count, so that
    # the walk meets every (head, complement) pair before it repeats one.
    stride = next(k for k in range(7, len(COMPLEMENTS) + 8) if math.gcd(k, len(COMPLEMENTS)) == 1)
    i = 0
    while len(out) < REQUESTS_PER_LANG + ORDINARY_PER_LANG:
        if i >= len(HEADS) * len(COMPLEMENTS):
            sys.exit("not enough distinct subjects: add heads or complements")
        (h_es, h_en), (c_es, c_en) = HEADS[i % len(HEADS)], COMPLEMENTS[(i * stride) % len(COMPLEMENTS)]
        pair = (f"{h_es} {c_es}", f"{h_en} {c_en}")
        if pair not in out:
            out.append(pair)
        i += 1
    return out


def generated_examples():
    subs = subjects()
    out = []
    for lang, idx in (("es", 0), ("en", 1)):
        forms = REQUESTS[lang]
        for i in range(REQUESTS_PER_LANG):
            subject = subs[i][idx]
            call = json.dumps({"prompt": subject}, ensure_ascii=False)
            out.append(example(lang, "templated_request",
                               forms[i % len(forms)].format(s=subject),
                               f"<TOOL:generate_image>{call}</TOOL>"))
        for i in range(ORDINARY_PER_LANG):
            # Subjects that are also asked for in a picture, and others: the call comes
            # from the request's wording, not from what it is about.
            subject = subs[(i * 2) % len(subs)][idx]
            q, a = ASKS[lang][i % len(ASKS[lang])]
            cap = subject[0].upper() + subject[1:]
            out.append(example(lang, "templated_no_tool",
                               q.format(s=subject, S=cap), a.format(s=subject, S=cap)))
    for q, a, lang in ORDINARY:
        out.append(example(lang, "templated_no_tool", q, a))
    return out


def example(lang, kind, user, assistant):
    return {
        "lang": lang,
        "kind": kind,
        "messages": [
            {"role": "user", "content": user},
            {"role": "assistant", "content": assistant},
        ],
    }


CALL = re.compile(r"<TOOL:generate_image>(\{.*?\})</TOOL>")


def frame(request, subject):
    """A request with its subject replaced by {s}, folded: its phrasing."""
    return fold(request.replace(subject, "{s}"))


def check(examples):
    """Exits with a message at the first overlap with a held-out set."""
    held = json.loads(HELDOUT.read_text(encoding="utf-8"))
    old = json.loads(OLD_EVAL.read_text(encoding="utf-8"))
    held_words = {}
    for r in held["image_requests"]:
        if r["subject"] not in r["request"]:
            sys.exit(f"held-out subject {r['subject']!r} is not a span of {r['request']!r}")
        for w in content_words(r["subject"]):
            held_words[w] = r["subject"]
    old_words = set()
    for p in old["image_requests"]:
        old_words |= long_words(p)
    held_prompts = {fold(r["request"]) for r in held["image_requests"]}
    held_prompts |= {fold(p["prompt"]) for p in held["ordinary"]}
    held_prompts |= {fold(p) for p in old["image_requests"] + old["ordinary"]}
    held_frames = {frame(r["request"], r["subject"]) for r in held["image_requests"]}
    train_frames = {fold(f) for forms in REQUESTS.values() for f in forms}
    if held_frames & train_frames:
        sys.exit(f"held-out phrasings {sorted(held_frames & train_frames)} are training phrasings")
    for e in examples:
        for m in e["messages"]:
            if m["role"] == "user" and fold(m["content"]) in held_prompts:
                sys.exit(f"{m['content']!r} is a held-out prompt")
            if m["role"] != "assistant":
                continue
            for call in CALL.findall(m["content"]):
                prompt = json.loads(call)["prompt"]
                for w in content_words(prompt) & held_words.keys():
                    sys.exit(f"training call {prompt!r} shares {w!r} with the held-out subject "
                             f"{held_words[w]!r}")
                leaked = long_words(prompt) & old_words
                if leaked:
                    sys.exit(f"training call {prompt!r} shares {leaked} with tool_calling_eval.json")


def main():
    data = json.loads(DATASET.read_text(encoding="utf-8"))
    if sys.argv[1:] == ["--check"]:
        check(data["examples"])
        print(f"{DATASET.relative_to(ROOT)}: {len(data['examples'])} examples, no overlap with the held-out sets")
        return
    kept = [e for e in data["examples"] if not e["kind"].startswith("templated_")]
    data["examples"] = kept + generated_examples()
    check(data["examples"])
    tmp = DATASET.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    tmp.replace(DATASET)
    calls = sum(1 for e in data["examples"] if "<TOOL:" in e["messages"][-1]["content"])
    print(f"{len(data['examples'])} examples: {calls} calls, "
          f"{len(data['examples']) - calls} ordinary turns")


if __name__ == "__main__":
    main()
